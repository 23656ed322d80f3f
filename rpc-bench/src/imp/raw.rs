//! The floor: hand-written tokio TCP over `LengthDelimitedCodec`, an 8-byte
//! request id and a 1-byte op, multiplexed, writes batched. Fixed layouts
//! instead of serialization, a byte switch instead of dispatch, replies
//! computed inline on the connection's reader.

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
const MAX_FRAME: usize = 16 << 20;

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
            _ => return,
        };
        if tx.send(reply).is_err() {
            return;
        }
    }
}

/// Raw framing.
pub struct Raw;

/// The raw client: a writer queue and a locked map of waiting calls.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

struct Inner {
    tx: mpsc::UnboundedSender<BytesMut>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>,
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
        let routes = pending.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, codec());
            while let Some(Ok(mut f)) = frames.next().await {
                let id = f.get_u64_le();
                if let Some(waiting) = routes.lock().unwrap().remove(&id) {
                    let _ = waiting.send(f.freeze());
                }
            }
        });
        Client(Arc::new(Inner {
            tx,
            pending,
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
}
