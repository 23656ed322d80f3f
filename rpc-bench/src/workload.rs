//! The workloads W1-W5 and the allocation and idle-memory counts, each run
//! closed-loop against one implementation, every reply checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::alloc::{self, Side};
use crate::imp::{Client, Implementation, OBJ};

/// Calls per second with latency percentiles.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rate {
    pub calls_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Payload throughput with the tail latency.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Throughput {
    pub mib_per_sec: f64,
    pub p99_ms: f64,
}

/// Everything measured for one implementation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub name: &'static str,
    pub w1: Rate,
    /// W1 through the blocking client, from a thread with no runtime
    /// (zeros for implementations without one).
    pub w1_blocking: Rate,
    pub w2: Rate,
    pub w3: Rate,
    pub w4_64k: Throughput,
    pub w4_1m: Throughput,
    pub w5_ms: f64,
    pub w6_items_per_sec: f64,
    pub w7_mib_per_sec: f64,
    pub w8_items_per_sec: f64,
    pub client_allocs_per_call: f64,
    pub server_allocs_per_call: f64,
    pub server_bytes_per_idle_conn: f64,
}

/// Call counts; `--quick` divides them by ten. `--workloads` picks some
/// (for a profiler); the others report zeros.
#[derive(Clone)]
pub struct Counts {
    pub scale: usize,
    pub workloads: Option<Vec<String>>,
}

impl Counts {
    fn n(&self, full: usize) -> usize {
        (full / self.scale).max(1)
    }

    fn runs(&self, workload: &str) -> bool {
        self.workloads
            .as_ref()
            .is_none_or(|list| list.iter().any(|w| w == workload))
    }
}

const SKIPPED_RATE: Rate = Rate {
    calls_per_sec: 0.0,
    p50_us: 0.0,
    p99_us: 0.0,
};
const SKIPPED_THROUGHPUT: Throughput = Throughput {
    mib_per_sec: 0.0,
    p99_ms: 0.0,
};

/// Runs every workload against `I`'s server at `addr`.
pub async fn run<I: Implementation>(addr: std::net::SocketAddr, counts: &Counts) -> Figures {
    let one = I::connect(addr).await;
    let single = std::slice::from_ref(&one);
    let add = |c: I::Client, i: usize| async move {
        let a = i as i32;
        assert_eq!(c.add(a, 7).await, a.wrapping_add(7));
    };

    let mut w1 = SKIPPED_RATE;
    if counts.runs("w1") {
        closed_loop(single, 1, counts.n(2_000), add).await;
        w1 = closed_loop(single, 1, counts.n(20_000), add).await.rate();
    }

    let mut w2 = SKIPPED_RATE;
    if counts.runs("w2") {
        closed_loop(single, 64, counts.n(20_000), add).await;
        w2 = closed_loop(single, 64, counts.n(200_000), add).await.rate();
    }

    let mut w3 = SKIPPED_RATE;
    if counts.runs("w3") {
        let mut eight = Vec::new();
        for _ in 0..8 {
            eight.push(I::connect(addr).await);
        }
        closed_loop(&eight, 32, counts.n(20_000), add).await;
        w3 = closed_loop(&eight, 32, counts.n(200_000), add).await.rate();
    }

    let mut w4_64k = SKIPPED_THROUGHPUT;
    let mut w4_1m = SKIPPED_THROUGHPUT;
    if counts.runs("w4") {
        w4_64k = echo_workload(&one, 64 * 1024, counts.n(10_000)).await;
        w4_1m = echo_workload(&one, 1024 * 1024, counts.n(500)).await;
    }

    let mut w5_ms = 0.0;
    if counts.runs("w5") {
        w5(&one, 100).await;
        w5_ms = w5(&one, 500).await.as_secs_f64() * 1e3;
    }

    let (mut w6, mut w7, mut w8) = (0.0, 0.0, 0.0);
    if I::STREAMS {
        if counts.runs("w6") {
            one.numbers(counts.n(100_000) as u64).await;
            w6 = w6_items(&one, counts.n(1_000_000) as u64).await;
        }
        if counts.runs("w7") {
            w7_upload(&one, counts.n(256)).await;
            w7 = w7_upload(&one, counts.n(4_096)).await;
        }
        if counts.runs("w8") {
            w8_streams(&one, 64, counts.n(1_000) as u64).await;
            w8 = w8_streams(&one, 64, counts.n(10_000) as u64).await;
        }
    }

    let (client_allocs_per_call, server_allocs_per_call) = allocations_per_call(&one, 2_000).await;
    let server_bytes_per_idle_conn = idle_connection_bytes::<I>(addr, 1_000).await;

    Figures {
        name: I::NAME,
        w1,
        w1_blocking: SKIPPED_RATE,
        w2,
        w3,
        w4_64k,
        w4_1m,
        w5_ms,
        w6_items_per_sec: w6,
        w7_mib_per_sec: w7,
        w8_items_per_sec: w8,
        client_allocs_per_call,
        server_allocs_per_call,
        server_bytes_per_idle_conn,
    }
}

/// W1 through `I`'s blocking client, if it has one: one thread making
/// `calls` calls one after the other. Call it from a thread with no
/// runtime.
pub fn w1_blocking<I: Implementation>(addr: std::net::SocketAddr, counts: &Counts) -> Rate {
    let Some(add) = (counts.runs("w1"))
        .then(|| I::connect_blocking(addr))
        .flatten()
    else {
        return SKIPPED_RATE;
    };
    let run = |calls: usize| {
        let mut latencies = Vec::with_capacity(calls);
        let start = Instant::now();
        for i in 0..calls {
            let a = i as i32;
            let t = Instant::now();
            assert_eq!(add(a, 7), a.wrapping_add(7));
            latencies.push(t.elapsed().as_nanos() as u64);
        }
        let wall = start.elapsed();
        latencies.sort_unstable();
        Run {
            calls,
            wall,
            latencies,
        }
    };
    run(counts.n(2_000));
    run(counts.n(20_000)).rate()
}

struct Run {
    calls: usize,
    wall: Duration,
    latencies: Vec<u64>,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i] as f64
    }

    fn rate(&self) -> Rate {
        Rate {
            calls_per_sec: self.calls as f64 / self.wall.as_secs_f64(),
            p50_us: self.percentile(0.50) / 1e3,
            p99_us: self.percentile(0.99) / 1e3,
        }
    }
}

/// `per_client` tasks on each client make `total` calls between them, each
/// starting its next call when the last one returns.
async fn closed_loop<C, F, Fut>(clients: &[C], per_client: usize, total: usize, op: F) -> Run
where
    C: Client,
    F: Fn(C, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .flat_map(|c| std::iter::repeat_n(c, per_client))
        .map(|c| {
            let (c, next, op) = (c.clone(), next.clone(), op.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total / 8 + 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let t = Instant::now();
                    op(c.clone(), i).await;
                    latencies.push(t.elapsed().as_nanos() as u64);
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await.expect("workload task"));
    }
    let wall = start.elapsed();
    latencies.sort_unstable();
    Run {
        calls: total,
        wall,
        latencies,
    }
}

async fn echo_workload<C: Client>(client: &C, size: usize, calls: usize) -> Throughput {
    let payload: Arc<Vec<u8>> = Arc::new((0..size).map(|i| (i % 251) as u8).collect());
    let echo = move |c: C, _| {
        let expected = payload.clone();
        async move {
            let back = c.echo(expected.to_vec()).await;
            assert!(back == *expected, "echo came back changed");
        }
    };
    let clients = std::slice::from_ref(client);
    closed_loop(clients, 8, (calls / 10).max(8), echo.clone()).await;
    let run = closed_loop(clients, 8, calls, echo).await;
    Throughput {
        mib_per_sec: (run.calls * size) as f64 / (1024.0 * 1024.0) / run.wall.as_secs_f64(),
        p99_ms: run.percentile(0.99) / 1e6,
    }
}

/// W6: one server stream of `count` small items; items per second.
async fn w6_items<C: Client>(client: &C, count: u64) -> f64 {
    let start = Instant::now();
    assert_eq!(client.numbers(count).await, count, "items lost");
    count as f64 / start.elapsed().as_secs_f64()
}

/// W7: `chunks` chunks of 64 KiB streamed to the server; MiB per second.
async fn w7_upload<C: Client>(client: &C, chunks: usize) -> f64 {
    let chunk: Arc<Vec<u8>> = Arc::new((0..64 * 1024).map(|i| (i % 251) as u8).collect());
    let start = Instant::now();
    let counted = client.upload(chunk, chunks).await;
    assert_eq!(counted, (chunks * 64 * 1024) as u64, "bytes lost");
    (chunks * 64) as f64 / 1024.0 / start.elapsed().as_secs_f64()
}

/// W8: `streams` server streams of `count` items each at once on one
/// connection; items per second in all.
async fn w8_streams<C: Client>(client: &C, streams: usize, count: u64) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.numbers(count).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("stream task"), count, "items lost");
    }
    (streams as u64 * count) as f64 / start.elapsed().as_secs_f64()
}

async fn w5<C: Client>(client: &C, calls: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..calls {
        assert_eq!(client.get_obj().await, OBJ);
    }
    for _ in 0..calls {
        client.send_obj(OBJ.to_owned()).await;
    }
    start.elapsed()
}

async fn allocations_per_call<C: Client>(client: &C, calls: usize) -> (f64, f64) {
    let (client_before, server_before) = (
        alloc::allocations(Side::Client),
        alloc::allocations(Side::Server),
    );
    for i in 0..calls as i32 {
        assert_eq!(client.add(i, 1).await, i + 1);
    }
    let client_allocs = alloc::allocations(Side::Client) - client_before;
    let server_allocs = alloc::allocations(Side::Server) - server_before;
    (
        client_allocs as f64 / calls as f64,
        server_allocs as f64 / calls as f64,
    )
}

async fn idle_connection_bytes<I: Implementation>(addr: std::net::SocketAddr, conns: usize) -> f64 {
    let before = alloc::live_bytes(Side::Server);
    let mut clients = Vec::with_capacity(conns);
    for i in 0..conns {
        let c = I::connect(addr).await;
        // One call each, so the server has accepted and set up every one.
        assert_eq!(c.add(i as i32, 1).await, i as i32 + 1);
        clients.push(c);
    }
    let after = alloc::live_bytes(Side::Server);
    drop(clients);
    (after - before) as f64 / conns as f64
}
