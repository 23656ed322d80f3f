//! The floor: hand-written tokio TCP over `LengthDelimitedCodec`, an 8-byte
//! request id and a 1-byte op, multiplexed, writes batched. Fixed layouts
//! instead of serialization, a byte switch instead of dispatch, replies
//! computed inline on the connection's reader.
//!
//! Streams have credit flow control counted in items: a window of 32,768
//! `u64`s (sent 4,096 to a frame, granted back per half window) and of 32
//! upload chunks. Stream frames carry their id with the top bit set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

const ADD: u8 = 0;
const ECHO: u8 = 1;
const GET_OBJ: u8 = 2;
const SEND_OBJ: u8 = 3;
/// Payload: count (u64). The server streams `0..count` back.
const NUMBERS: u8 = 4;
/// No payload; the client then sends chunks and an end.
const UPLOAD: u8 = 5;
const CHUNK: u8 = 6;
const END: u8 = 7;
/// Payload: items (u32) the client grants a number stream.
const CREDIT: u8 = 8;
const MAX_FRAME: usize = 16 << 20;
/// Stream frames (items, upload credit) carry their id with this bit set.
const STREAM_BIT: u64 = 1 << 63;
const NUMBER_WINDOW: u32 = 32_768;
const NUMBERS_PER_FRAME: u32 = 4_096;
const CHUNK_WINDOW: u32 = 32;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

fn frame(id: u64, op: Option<u8>, payload: &[u8]) -> BytesMut {
    let len = 8 + usize::from(op.is_some()) + payload.len();
    let mut buf = BytesMut::with_capacity(4 + len);
    buf.put_u32(len as u32);
    buf.put_u64_le(id);
    if let Some(op) = op {
        buf.put_u8(op);
    }
    buf.put_slice(payload);
    buf
}

/// Writes every queued frame, as many per system call as are ready.
async fn write_loop(mut io: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<BytesMut>) {
    let mut batch = Vec::new();
    let mut out = BytesMut::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        // Let every task that is ready queue its frame before writing.
        tokio::task::yield_now().await;
        while let Ok(f) = rx.try_recv() {
            batch.push(f);
        }
        for f in batch.drain(..) {
            if f.len() >= 64 * 1024 {
                if !out.is_empty() {
                    if io.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
                if io.write_all(&f).await.is_err() {
                    return;
                }
            } else {
                out.extend_from_slice(&f);
            }
        }
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

async fn serve_connection(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(write, rx));
    let mut frames = FramedRead::new(read, codec());
    // Number streams' credit, and uploads' bytes and chunks taken since the
    // last grant.
    let mut credits: HashMap<u64, Arc<tokio::sync::Semaphore>> = HashMap::new();
    let mut uploads: HashMap<u64, (u64, u32)> = HashMap::new();
    while let Some(Ok(mut f)) = frames.next().await {
        if f.len() < 9 {
            return;
        }
        let id = f.get_u64_le();
        let op = f.get_u8();
        let reply = match op {
            ADD if f.len() == 8 => {
                let a = f.get_i32_le();
                let b = f.get_i32_le();
                frame(id, None, &a.wrapping_add(b).to_le_bytes())
            }
            ECHO => frame(id, None, &f),
            GET_OBJ => frame(id, None, super::OBJ.as_bytes()),
            SEND_OBJ => frame(id, None, &[]),
            NUMBERS if f.len() == 8 => {
                let count = f.get_u64_le();
                let credit = Arc::new(tokio::sync::Semaphore::new(NUMBER_WINDOW as usize));
                credits.insert(id, credit.clone());
                tokio::spawn(numbers(id, count, credit, tx.clone()));
                continue;
            }
            CREDIT if f.len() == 4 => {
                let items = f.get_u32_le();
                if let Some(credit) = credits.get(&id) {
                    credit.add_permits(items as usize);
                }
                continue;
            }
            UPLOAD => {
                uploads.insert(id, (0, 0));
                continue;
            }
            CHUNK => {
                let Some((total, taken)) = uploads.get_mut(&id) else {
                    return;
                };
                *total += f.len() as u64;
                *taken += 1;
                if *taken >= CHUNK_WINDOW / 2 {
                    let grant = std::mem::take(taken);
                    if tx
                        .send(frame(id | STREAM_BIT, None, &grant.to_le_bytes()))
                        .is_err()
                    {
                        return;
                    }
                }
                continue;
            }
            END => {
                let Some((total, _)) = uploads.remove(&id) else {
                    return;
                };
                frame(id, None, &total.to_le_bytes())
            }
            _ => return,
        };
        if tx.send(reply).is_err() {
            return;
        }
    }
}

/// Streams `0..count` as stream `id`, within the client's credit; an empty
/// frame ends it.
async fn numbers(
    id: u64,
    count: u64,
    credit: Arc<tokio::sync::Semaphore>,
    tx: mpsc::UnboundedSender<BytesMut>,
) {
    let mut next = 0u64;
    while next < count {
        let n = (count - next).min(u64::from(NUMBERS_PER_FRAME)) as u32;
        let Ok(permits) = credit.acquire_many(n).await else {
            return;
        };
        permits.forget();
        let mut items = BytesMut::with_capacity(n as usize * 8);
        for i in next..next + u64::from(n) {
            items.put_u64_le(i);
        }
        next += u64::from(n);
        if tx.send(frame(id | STREAM_BIT, None, &items)).is_err() {
            return;
        }
    }
    let _ = tx.send(frame(id | STREAM_BIT, None, &[]));
}

/// Raw framing.
pub struct Raw;

/// The raw client: a writer queue, a locked map of waiting calls, and one
/// of open streams.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

/// Where a stream frame for an id goes.
enum Sink {
    /// A number stream's frames, to its reader.
    Items(mpsc::UnboundedSender<Bytes>),
    /// An upload's credit, in chunks.
    Credit(Arc<tokio::sync::Semaphore>),
}

struct Inner {
    tx: mpsc::UnboundedSender<BytesMut>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>,
    streams: Arc<Mutex<HashMap<u64, Sink>>>,
    next: AtomicU64,
}

impl Client {
    async fn call(&self, op: u8, payload: &[u8]) -> Bytes {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.0.pending.lock().unwrap().insert(id, tx);
        self.0
            .tx
            .send(frame(id, Some(op), payload))
            .expect("connection open");
        rx.await.expect("reply")
    }
}

impl super::Implementation for Raw {
    const NAME: &'static str = "raw";
    type Client = Client;

    async fn serve() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream));
            }
        });
        addr
    }

    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, rx));
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>> = Arc::default();
        let streams: Arc<Mutex<HashMap<u64, Sink>>> = Arc::default();
        let routes = pending.clone();
        let stream_routes = streams.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, codec());
            while let Some(Ok(mut f)) = frames.next().await {
                let id = f.get_u64_le();
                if id & STREAM_BIT != 0 {
                    let streams = stream_routes.lock().unwrap();
                    match streams.get(&(id & !STREAM_BIT)) {
                        Some(Sink::Items(tx)) => {
                            let _ = tx.send(f.freeze());
                        }
                        Some(Sink::Credit(credit)) => credit.add_permits(f.get_u32_le() as usize),
                        None => {}
                    }
                    continue;
                }
                if let Some(waiting) = routes.lock().unwrap().remove(&id) {
                    let _ = waiting.send(f.freeze());
                }
            }
        });
        Client(Arc::new(Inner {
            tx,
            pending,
            streams,
            next: AtomicU64::new(0),
        }))
    }
}

impl super::Client for Client {
    async fn add(&self, a: i32, b: i32) -> i32 {
        let mut args = [0u8; 8];
        args[..4].copy_from_slice(&a.to_le_bytes());
        args[4..].copy_from_slice(&b.to_le_bytes());
        let mut reply = self.call(ADD, &args).await;
        reply.get_i32_le()
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        self.call(ECHO, &data).await.to_vec()
    }
    async fn get_obj(&self) -> String {
        String::from_utf8(self.call(GET_OBJ, &[]).await.to_vec()).expect("utf-8")
    }
    async fn send_obj(&self, data: String) {
        self.call(SEND_OBJ, data.as_bytes()).await;
    }
    async fn numbers(&self, count: u64) -> u64 {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let (items, mut frames) = mpsc::unbounded_channel();
        self.0
            .streams
            .lock()
            .unwrap()
            .insert(id, Sink::Items(items));
        self.0
            .tx
            .send(frame(id, Some(NUMBERS), &count.to_le_bytes()))
            .expect("connection open");
        let (mut seen, mut taken) = (0u64, 0u32);
        while let Some(mut f) = frames.recv().await {
            if f.is_empty() {
                break;
            }
            while f.has_remaining() {
                assert_eq!(f.get_u64_le(), seen, "numbers out of order");
                seen += 1;
                taken += 1;
            }
            if taken >= NUMBER_WINDOW / 2 {
                let grant = std::mem::take(&mut taken);
                self.0
                    .tx
                    .send(frame(id, Some(CREDIT), &grant.to_le_bytes()))
                    .expect("connection open");
            }
        }
        self.0.streams.lock().unwrap().remove(&id);
        seen
    }
    async fn upload(&self, chunk: Arc<Vec<u8>>, chunks: usize) -> u64 {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let credit = Arc::new(tokio::sync::Semaphore::new(CHUNK_WINDOW as usize));
        self.0
            .streams
            .lock()
            .unwrap()
            .insert(id, Sink::Credit(credit.clone()));
        let (tx, rx) = oneshot::channel();
        self.0.pending.lock().unwrap().insert(id, tx);
        self.0
            .tx
            .send(frame(id, Some(UPLOAD), &[]))
            .expect("connection open");
        for _ in 0..chunks {
            credit.acquire().await.expect("credit").forget();
            self.0
                .tx
                .send(frame(id, Some(CHUNK), &chunk))
                .expect("connection open");
        }
        self.0
            .tx
            .send(frame(id, Some(END), &[]))
            .expect("connection open");
        let mut total = rx.await.expect("reply");
        self.0.streams.lock().unwrap().remove(&id);
        total.get_u64_le()
    }
}
