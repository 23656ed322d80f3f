//! Load figures for docs/RELIABILITY.md, on 127.0.0.1 only, bounded in time:
//!
//! - `idle`: N idle connections held for a while; the server's RSS.
//! - `slow`: N clients each start a 1 MiB frame and trickle one byte every
//!   100 ms; the server's peak RSS, whether its frame timeout closes them,
//!   and a probe client's latency meanwhile.
//!
//! - `chaos`: 50 clients make 100,000 calls through a proxy that kills
//!   every connection after a random 1-50 ms; every call must end once, in
//!   a correct success or a definite error, none may hang, and file
//!   descriptors must come back to where they were.
//!
//! The server runs in a child process (this binary with `serve`), so that
//! its RSS is measured apart from the clients'.
//!
//! `cargo run --release --manifest-path rpc-bench/Cargo.toml --bin stress -- idle 5000 60`
//! `cargo run --release --manifest-path rpc-bench/Cargo.toml --bin stress -- slow 2000 30`
//! `cargo run --release --manifest-path rpc-bench/Cargo.toml --bin stress -- chaos 50 100000`

#[path = "../fd_limit.rs"]
mod fd_limit;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rpc_core::{Server, rpc_service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The probe's service.
#[rpc_service]
pub trait Probe {
    /// Answers at once.
    async fn ping(&self, n: u32) -> u32;
}

struct Imp;

impl Probe for Imp {
    async fn ping(&self, n: u32) -> u32 {
        n
    }
}

const HELLO: [u8; 8] = *b"RKIT\x01\x00\x00\x00";

fn main() {
    fd_limit::raise();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let number = |i: usize, default: u64| -> u64 {
        args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    match args.first().map(String::as_str) {
        Some("serve") => runtime.block_on(serve(Duration::from_secs(number(1, 30)))),
        Some("idle") => runtime.block_on(idle(number(1, 5000) as usize, number(2, 60))),
        Some("slow") => runtime.block_on(slow(number(1, 2000) as usize, number(2, 30))),
        Some("chaos") => {
            runtime.block_on(chaos(number(1, 50) as usize, number(2, 100_000) as usize))
        }
        _ => {
            eprintln!(
                "usage: stress idle [CONNECTIONS] [SECONDS] | slow [CLIENTS] [FRAME_TIMEOUT_SECONDS] | chaos [CLIENTS] [CALLS]"
            );
            std::process::exit(2);
        }
    }
}

/// The child: a server with room for the connections, printing its address.
async fn serve(frame_timeout: Duration) {
    let server = Server::builder()
        .max_connections(20_000)
        .frame_timeout(frame_timeout)
        .add_service(ProbeServer::new(Imp))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("{}", server.local_addr());
    server.serve().await.expect("serve");
}

fn spawn_server(frame_timeout_secs: u64) -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["serve", &frame_timeout_secs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server address");
    (child, line.trim().parse().expect("address"))
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn idle(connections: usize, seconds: u64) {
    let (mut child, addr) = spawn_server(30);
    let probe = ProbeClient::connect(addr).await.expect("probe");
    assert_eq!(probe.ping(1).await.expect("probe call"), 1);
    let before = rss_kib(child.id());
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        let c = ProbeClient::connect(addr).await.expect("connect");
        assert_eq!(c.ping(i as u32).await.expect("call"), i as u32);
        held.push(c);
    }
    let opened = rss_kib(child.id());
    let mut peak = opened;
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_kib(child.id()));
    }
    // Still served after the wait?
    for (i, c) in held.iter().enumerate().step_by((connections / 10).max(1)) {
        assert_eq!(c.ping(i as u32).await.expect("call after idling"), i as u32);
    }
    println!(
        "idle: {connections} connections held {seconds} s; server RSS {:.1} MiB before, {:.1} MiB with them open, peak {:.1} MiB; {:.0} bytes per connection",
        before as f64 / 1024.0,
        opened as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(before) * 1024) as f64 / connections as f64
    );
    let _ = child.kill();
}

async fn slow(clients: usize, frame_timeout: u64) {
    let (mut child, addr) = spawn_server(frame_timeout);
    let probe = ProbeClient::connect(addr).await.expect("probe");
    let before = rss_kib(child.id());
    let started = Instant::now();
    let tricklers: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.ok()?;
                s.write_all(&HELLO).await.ok()?;
                let mut hello = [0u8; 8];
                s.read_exact(&mut hello).await.ok()?;
                // A 1 MiB frame, one byte at a time, every 100 ms.
                s.write_all(&(1u32 << 20).to_le_bytes()).await.ok()?;
                let begun = Instant::now();
                loop {
                    if s.write_all(&[0]).await.is_err() {
                        return Some(begun.elapsed());
                    }
                    let mut probe = [0u8; 1];
                    tokio::select! {
                        read = s.read(&mut probe) => {
                            if matches!(read, Ok(0) | Err(_)) {
                                return Some(begun.elapsed());
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    if begun.elapsed() > Duration::from_secs(frame_timeout * 4 + 10) {
                        return None;
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut peak = before;
    let mut n = 0u32;
    while tricklers.iter().any(|t| !t.is_finished()) {
        let t = Instant::now();
        assert_eq!(probe.ping(n).await.expect("probe call"), n);
        latencies.push(t.elapsed());
        n = n.wrapping_add(1);
        peak = peak.max(rss_kib(child.id()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut closed_after = Vec::new();
    let mut not_closed = 0;
    for t in tricklers {
        match t.await.expect("trickler") {
            Some(after) => closed_after.push(after),
            None => not_closed += 1,
        }
    }
    closed_after.sort();
    latencies.sort();
    let p = |v: &[Duration], q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "slow: {clients} clients trickling 1 byte / 100 ms into 1 MiB frames; frame timeout {frame_timeout} s; \
         {} closed by the server (median after {:.1?}, max {:.1?}), {not_closed} never closed; \
         server RSS {:.1} MiB before, peak {:.1} MiB; probe: {} calls, p50 {:.2?}, p99 {:.2?}, max {:.2?}; run {:.1?}",
        closed_after.len(),
        p(&closed_after, 0.5),
        closed_after.last().copied().unwrap_or_default(),
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        latencies.len(),
        p(&latencies, 0.5),
        p(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        started.elapsed(),
    );
    let _ = child.kill();
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Forwards connections to `target`, killing each after a random 1-50 ms.
async fn killing_proxy(target: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    let task = tokio::spawn(async move {
        let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
        while let Ok((mut inbound, _)) = listener.accept().await {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let life = Duration::from_millis(1 + rng % 50);
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::time::timeout(
                    life,
                    tokio::io::copy_bidirectional(&mut inbound, &mut outbound),
                )
                .await;
            });
        }
    });
    (addr, task)
}

async fn chaos(clients: usize, calls: usize) {
    let (mut child, server) = spawn_server(30);
    let me = std::process::id();
    let (my_fds, server_fds) = (fds(me), fds(child.id()));
    let (proxy, proxy_task) = killing_proxy(server).await;
    let per_client = calls / clients;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(async move {
                let channel = rpc_core::Channel::builder()
                    // Reconnect at once: the proxy always accepts.
                    .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(10))
                    .connect(proxy)
                    .await
                    .expect("first connect");
                let client = ProbeClient::new(channel);
                let mut tally = [0usize; 5]; // ok, closed, not processed, connect, hung
                for i in 0..per_client {
                    let n = (c * per_client + i) as u32;
                    match tokio::time::timeout(Duration::from_secs(10), client.ping(n)).await {
                        Ok(Ok(back)) => {
                            assert_eq!(back, n, "a reply went to the wrong call");
                            tally[0] += 1;
                        }
                        Ok(Err(rpc_core::RpcError::ConnectionClosed { .. })) => tally[1] += 1,
                        Ok(Err(rpc_core::RpcError::NotProcessed { .. })) => tally[2] += 1,
                        Ok(Err(rpc_core::RpcError::Connect { .. })) => tally[3] += 1,
                        Ok(Err(other)) => panic!("unexpected error: {other}"),
                        Err(_) => tally[4] += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = [0usize; 5];
    for task in tasks {
        let tally = task.await.expect("client task");
        for (t, n) in total.iter_mut().zip(tally) {
            *t += n;
        }
    }
    let elapsed = started.elapsed();
    proxy_task.abort();
    let _ = proxy_task.await;
    // Let both sides finish closing what the proxy and clients left.
    let settle = Instant::now();
    while (fds(me) > my_fds || fds(child.id()) > server_fds)
        && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "chaos: {clients} clients, {} calls in {elapsed:.1?} through a proxy killing every connection after 1-50 ms: \
         {} ok, {} connection closed mid-call, {} not processed, {} connect errors, {} hung; \
         file descriptors: client {my_fds} -> {}, server {server_fds} -> {}",
        total.iter().sum::<usize>(),
        total[0],
        total[1],
        total[2],
        total[3],
        total[4],
        fds(me),
        fds(child.id()),
    );
    let _ = child.kill();
}
