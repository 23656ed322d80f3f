//! What one connection can make the server hold: a client that sends calls
//! but never reads the replies is held back by TCP once its backlog is
//! full, and a connection that sent one large call does not keep its memory
//! while it idles.
//!
//! One test in a binary of its own: it counts the bytes the whole process
//! holds, so nothing else may run beside it.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{Channel, Server, rpc_service};
use rpc_tests::{raw_connect, read_response, request_frame, serve};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;

/// Echoes bytes and tells the test each time it is called.
#[rpc_service]
pub trait Sink {
    /// Returns `data`.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns `len` bytes: a small request with a large reply.
    async fn fill(&self, len: u32) -> Vec<u8>;
}

struct SinkImpl(mpsc::UnboundedSender<()>);

impl Sink for SinkImpl {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        let _ = self.0.send(());
        data
    }

    async fn fill(&self, len: u32) -> Vec<u8> {
        let _ = self.0.send(());
        vec![7; len as usize]
    }
}

/// Live bytes above `before` once buffers kept after a large call have
/// been let go (a second after it), or after 10 s if they never are.
async fn kept_above(before: usize) -> usize {
    let mut kept = usize::MAX;
    for _ in 0..500 {
        kept = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        if kept < MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kept
}

/// An `echo` request for `len` bytes, as bincode encodes a `Vec<u8>` of
/// that length (a varint length, then the bytes).
fn echo_request(id: u64, len: u32) -> Vec<u8> {
    let mut body = vec![0xFC];
    body.extend_from_slice(&len.to_le_bytes());
    body.resize(body.len() + len as usize, 7);
    request_frame(id, "Sink", "echo", &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_holds_a_bounded_amount_of_server_memory() {
    let (called, mut calls) = mpsc::unbounded_channel();
    let addr = serve(Server::builder().add_service(SinkServer::new(SinkImpl(called)))).await;
    let bystander = SinkClient::new(Channel::connect(addr).await.unwrap());
    assert_eq!(bystander.echo(vec![1]).await.unwrap(), vec![1]);
    let _ = calls.recv().await;

    // 64 calls of 1 MiB, replies never read: before the backlog bound the
    // server read them all and queued 64 MiB of replies.
    const CALLS: u64 = 64;
    let stream = raw_connect(addr).await;
    let (mut read, mut write) = stream.into_split();
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let sending = tokio::spawn(async move {
        for id in 1..=CALLS {
            let frame = echo_request(id, MIB as u32);
            write.write_all(&frame).await.unwrap();
        }
        write
    });
    // The server answers calls until its backlog is full and then stops
    // reading; a second without a call is taken as stopped (it answers a
    // call in well under a millisecond here). Safety net: never more than
    // CALLS events.
    let mut answered = 0;
    while answered < CALLS {
        match tokio::time::timeout(Duration::from_secs(1), calls.recv()).await {
            Ok(Some(())) => answered += 1,
            _ => break,
        }
    }
    let held = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        answered < CALLS,
        "the server read all {CALLS} calls of a client that reads nothing"
    );
    // 4 MiB of backlog, one frame over it, a call in flight per core, the
    // read buffer and this test's own 1 MiB frame.
    assert!(
        held < 20 * MIB,
        "the server held {} MiB for a client that reads nothing ({answered} calls answered)",
        held / MIB
    );
    // Meanwhile the server answers others.
    assert_eq!(bystander.echo(vec![2]).await.unwrap(), vec![2]);

    // Once the client reads, everything arrives: nothing was dropped.
    let mut ids = Vec::new();
    for _ in 0..CALLS {
        let (id, status, body) = read_response(&mut read).await;
        assert_eq!((status, body.len()), (0, MIB + 5));
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=CALLS).collect::<Vec<_>>());
    drop(sending.await.unwrap());
    drop(read);

    // Small replies, never read: each sits in a buffer several times its
    // size. Counting only their bytes let 4 MiB of them take 44 MiB.
    let stream = raw_connect(addr).await;
    let (read, mut write) = stream.into_split();
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let small = tokio::spawn(async move {
        let batch: Vec<u8> = (0..4096u64).flat_map(|id| echo_request(id, 1)).collect();
        loop {
            if write.write_all(&batch).await.is_err() {
                break;
            }
        }
    });
    let mut quiet = 0;
    while quiet < 1 {
        match tokio::time::timeout(Duration::from_secs(1), calls.recv()).await {
            Ok(Some(())) => {}
            _ => quiet += 1,
        }
    }
    let held = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        held < 16 * MIB,
        "the server held {} MiB of small replies for a client that reads nothing",
        held / MIB
    );
    small.abort();
    drop(read);

    // 64 small calls answered where they are read, each with a 1 MiB
    // reply, arriving in one write, never read: the reader answers a burst
    // before it hands the replies on, and before they counted from the
    // moment they were made it held all 64 MiB.
    let stream = raw_connect(addr).await;
    let (mut read, mut write) = stream.into_split();
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let burst: Vec<u8> = (1..=CALLS)
        .flat_map(|id| request_frame(id, "Sink", "fill", &[0xFC, 0x00, 0x00, 0x10, 0x00]))
        .collect();
    write.write_all(&burst).await.unwrap();
    let mut answered = 0;
    while answered < CALLS {
        match tokio::time::timeout(Duration::from_secs(1), calls.recv()).await {
            Ok(Some(())) => answered += 1,
            _ => break,
        }
    }
    let held = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        held < 20 * MIB,
        "the server held {} MiB of replies made in place ({answered} calls answered)",
        held / MIB
    );
    for _ in 0..CALLS {
        let (_, status, body) = read_response(&mut read).await;
        assert_eq!((status, body.len()), (0, MIB + 5));
    }
    drop((read, write));

    // One 12 MiB call, then idle: the server must not keep its buffer.
    let mut stream = raw_connect(addr).await;
    let before = LIVE.load(Ordering::Relaxed);
    stream
        .write_all(&echo_request(1, 12 * MIB as u32))
        .await
        .unwrap();
    let (_, status, body) = read_response(&mut stream).await;
    assert_eq!((status, body.len()), (0, 12 * MIB + 5));
    drop(body);
    // A second, small call: by the time it is answered the writer has let
    // go of the first reply.
    stream.write_all(&echo_request(2, 1)).await.unwrap();
    let (id, status, _) = read_response(&mut stream).await;
    assert_eq!((id, status), (2, 0));
    // The server lets go of the buffer a second after the large frame.
    let kept = kept_above(before).await;
    assert!(
        kept < MIB,
        "an idle connection kept {} KiB after one large call",
        kept / 1024
    );
    drop(stream);

    // The same from an rpc-core client: neither side may keep what one
    // large call needed (found while making the buffers per thread: the
    // request and the reply were carved from buffers each thread keeps).
    let client = SinkClient::new(Channel::connect(addr).await.unwrap());
    let before = LIVE.load(Ordering::Relaxed);
    let back = client.echo(vec![1; 12 * MIB]).await.unwrap();
    assert_eq!(back.len(), 12 * MIB);
    drop(back);
    assert_eq!(client.echo(vec![2]).await.unwrap(), [2]);
    let kept = kept_above(before).await;
    assert!(
        kept < MIB,
        "client and server kept {} KiB after one large call",
        kept / 1024
    );
}
