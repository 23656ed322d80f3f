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
    pub w2: Rate,
    pub w3: Rate,
    pub w4_64k: Throughput,
    pub w4_1m: Throughput,
    pub w5_ms: f64,
    pub client_allocs_per_call: f64,
    pub server_allocs_per_call: f64,
    pub server_bytes_per_idle_conn: f64,
}

/// Call counts; `--quick` divides them by ten. `--workloads` picks some
/// (for a profiler); the others report zeros.
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

    let (client_allocs_per_call, server_allocs_per_call) = allocations_per_call(&one, 2_000).await;
    let server_bytes_per_idle_conn = idle_connection_bytes::<I>(addr, 1_000).await;

    Figures {
        name: I::NAME,
        w1,
        w2,
        w3,
        w4_64k,
        w4_1m,
        w5_ms,
        client_allocs_per_call,
        server_allocs_per_call,
        server_bytes_per_idle_conn,
    }
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
