//! Balanced channels over several real servers: how calls spread, what a
//! crash, a drain, a new server or no server at all does to them, and
//! which failed calls are sent again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rpc_core::discovery::{Change, Endpoint, Static};
use rpc_core::{Channel, RpcError, Server};
use rpc_tests::cluster::{NodeClient, NodeImpl, NodeServer};
use rpc_tests::process::NodeProcess;
use rpc_tests::{HELLO, within_10s};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODE: &str = env!("CARGO_BIN_EXE_cluster-node");

/// A node served in this process, and its address.
async fn node(name: &str, delay: Duration) -> (String, NodeImpl) {
    let node = NodeImpl::new(name, delay);
    let builder = Server::builder().add_service(NodeServer::new(node.clone()));
    (rpc_tests::serve(builder).await.to_string(), node)
}

/// `tasks` tasks making `calls` calls of `hit` each; who answered how often.
async fn tally(client: &NodeClient, tasks: usize, calls: usize) -> HashMap<String, usize> {
    let runs: Vec<_> = (0..tasks)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut names = Vec::with_capacity(calls);
                for _ in 0..calls {
                    names.push(client.hit().await.expect("a call"));
                }
                names
            })
        })
        .collect();
    let mut counts = HashMap::new();
    for run in runs {
        for name in run.await.expect("the task") {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

/// Until `n` endpoints are connected.
async fn connected(channel: &Channel, n: usize) {
    let wait = channel.endpoints_until(|e| e.iter().filter(|e| e.connected).count() == n);
    within_10s("the endpoints to connect", wait).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_every_endpoint() {
    let (a, _) = node("a", Duration::ZERO).await;
    let (b, _) = node("b", Duration::ZERO).await;
    let (c, _) = node("c", Duration::ZERO).await;
    let channel = Channel::balanced(Static::new([a, b, c])).await.unwrap();
    // `balanced` waits for the others only 250 ms after the first is
    // ready: on a loaded machine one may come later (seen once).
    connected(&channel, 3).await;
    let counts = tally(&NodeClient::new(channel), 20, 150).await;
    // A fair share is 1,000 of 3,000 each.
    for name in ["a", "b", "c"] {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!(got >= 600, "{name} got {got} of 3000 calls: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_gets_fewer_calls() {
    let (a, _) = node("a", Duration::ZERO).await;
    let (b, _) = node("b", Duration::ZERO).await;
    let (slow, _) = node("slow", Duration::from_millis(5)).await;
    let channel = Channel::balanced(Static::new([a, b, slow])).await.unwrap();
    let counts = tally(&NodeClient::new(channel), 20, 100).await;
    let slow = counts.get("slow").copied().unwrap_or(0);
    for fast in ["a", "b"] {
        let fast = counts[fast];
        assert!(
            slow * 2 < fast,
            "the slow node got {slow}, a fast one {fast}: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_share_the_calls_of_an_idle_cluster() {
    let (light, _) = node("light", Duration::ZERO).await;
    let (heavy, _) = node("heavy", Duration::ZERO).await;
    let endpoints = [Endpoint::new(light), Endpoint::new(heavy).weight(3)];
    let channel = Channel::balanced(Static::endpoints(endpoints))
        .await
        .unwrap();
    // One call at a time: every load is 0, so the weights alone decide.
    let counts = tally(&NodeClient::new(channel), 1, 4000).await;
    let share = counts["heavy"] as f64 / 4000.0;
    assert!(
        (0.70..0.80).contains(&share),
        "weight 3 of 4 got {share}: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_only_calls_that_may_have_run_and_no_idempotent_call() {
    let mut nodes: Vec<NodeProcess> = ["a", "b", "c"]
        .iter()
        .map(|name| NodeProcess::start(NODE, &[name]))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let channel = Channel::balanced(Static::new(addrs)).await.unwrap();
    let client = NodeClient::new(channel.with_timeout(Duration::from_secs(20)));
    let done = Arc::new(AtomicUsize::new(0));
    let kill_now = Arc::new(tokio::sync::Notify::new());
    let runs: Vec<_> = (0..20)
        .map(|task| {
            let (client, done, kill_now) = (client.clone(), done.clone(), kill_now.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for call in 0..500 {
                    let idempotent = (task + call) % 2 == 0;
                    let result = if idempotent {
                        client.name().await
                    } else {
                        client.hit().await
                    };
                    outcomes.push((idempotent, result));
                    if done.fetch_add(1, Ordering::SeqCst) + 1 == 2000 {
                        kill_now.notify_one();
                    }
                }
                outcomes
            })
        })
        .collect();
    kill_now.notified().await;
    nodes[2].kill();
    let all = async {
        let mut outcomes = Vec::new();
        for run in runs {
            outcomes.extend(run.await.expect("the task"));
        }
        outcomes
    };
    let outcomes = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every call ends: none hangs");
    assert_eq!(outcomes.len(), 10_000);
    let mut lost = 0;
    for (idempotent, result) in &outcomes {
        match result {
            Ok(_) => {}
            Err(e) if *idempotent => panic!("an idempotent call failed: {e}"),
            // Sent, and then the connection broke: it may have run.
            Err(RpcError::ConnectionClosed { .. }) => lost += 1,
            Err(e) => panic!("a call failed otherwise than definitely: {e}"),
        }
    }
    // At most the calls in flight on the dead connection: 20 tasks.
    assert!(lost <= 20, "{lost} calls lost");
    let after = tally(&client, 4, 50).await;
    assert!(
        !after.contains_key("c"),
        "the dead node answered: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_added_later_gets_calls_and_one_removed_gets_none() {
    let (a, _) = node("a", Duration::ZERO).await;
    let (b, _) = node("b", Duration::ZERO).await;
    let (changes, source) = futures::channel::mpsc::unbounded();
    let insert = |key: &str, address: &str| Change::Insert {
        key: key.to_owned(),
        endpoint: Endpoint::new(address),
    };
    changes.unbounded_send(Ok(vec![insert("a", &a)])).unwrap();
    let channel = Channel::balanced(source.boxed()).await.unwrap();
    let client = NodeClient::new(channel.clone());
    assert_eq!(tally(&client, 1, 20).await["a"], 20);

    changes.unbounded_send(Ok(vec![insert("b", &b)])).unwrap();
    connected(&channel, 2).await;
    let counts = tally(&client, 4, 100).await;
    assert!(counts["b"] >= 100, "the new node got {counts:?}");

    let remove = Change::Remove { key: "a".into() };
    changes.unbounded_send(Ok(vec![remove])).unwrap();
    within_10s("a to go", channel.endpoints_until(|e| e.len() == 1)).await;
    assert_eq!(tally(&client, 4, 50).await["b"], 200);

    // A source that fails keeps the endpoints it had.
    let failure = RpcError::Discovery {
        message: "the registry is down".into(),
    };
    changes.unbounded_send(Err(failure)).unwrap();
    drop(changes);
    assert_eq!(tally(&client, 2, 50).await["b"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_gets_no_new_calls() {
    let (a, _) = node("a", Duration::ZERO).await;
    let (b, _) = node("b", Duration::ZERO).await;
    let draining = NodeImpl::new("draining", Duration::ZERO);
    let server = Server::builder()
        .add_service(NodeServer::new(draining.clone()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let channel = Channel::balanced(Static::new([a, b, addr.clone()]))
        .await
        .unwrap();
    let client = NodeClient::new(channel.clone());
    let before = tally(&client, 4, 100).await;
    assert!(before.contains_key("draining"), "{before:?}");

    stop.send(()).unwrap();
    let gone = channel.endpoints_until(|e| e.iter().any(|e| e.address == addr && !e.connected));
    within_10s("the drain to be seen", gone).await;
    let answered = draining.answered();
    let after = tally(&client, 4, 100).await;
    assert_eq!(after.values().sum::<usize>(), 400, "every call succeeded");
    assert_eq!(
        draining.answered(),
        answered,
        "no call went to the drained server"
    );
    within_10s("the drained server to stop", serving)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn with_no_endpoint_connected_calls_fail_fast_and_say_why() {
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let channel = Channel::balanced(Static::new([dead.clone()]))
        .await
        .unwrap();
    assert!(channel.is_closed());
    let client = NodeClient::new(channel);
    let error = within_10s("the call to fail", client.hit())
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&dead) && message.contains("none of the 1 endpoint(s) is connected"),
        "{message}"
    );

    let empty = Channel::balanced(Static::new(Vec::<String>::new()))
        .await
        .unwrap();
    let error = NodeClient::new(empty).hit().await.unwrap_err();
    assert!(error.to_string().contains("knows none"), "{error}");
}

/// A server that takes each connection, reads one request and answers it
/// with a DRAIN that says it read none of it (docs/PROTOCOL.md §3), then
/// closes; returns its address and how many requests it saw.
async fn refusing_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut hello = [0u8; 8];
                stream.read_exact(&mut hello).await?;
                stream.write_all(&HELLO).await?;
                let payload = rpc_tests::read_frame(&mut stream).await;
                counter.fetch_add(1, Ordering::SeqCst);
                let id = &payload[2..10];
                let mut drain = 10u32.to_le_bytes().to_vec();
                drain.extend_from_slice(&[0x07, 0]);
                drain.extend_from_slice(id);
                stream.write_all(&drain).await?;
                stream.shutdown().await?;
                let _ = rpc_tests::read_until_closed(&mut stream).await;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_server_did_not_run_is_sent_to_another_endpoint() {
    let (good, node) = node("good", Duration::ZERO).await;
    let (refusing, refused) = refusing_server().await;
    let channel = Channel::balanced(Static::new([good, refusing]))
        .await
        .unwrap();
    let client = NodeClient::new(channel.clone());
    let mut calls = 0;
    while refused.load(Ordering::SeqCst) < 5 {
        connected(&channel, 2).await;
        // Not idempotent: sent again only because it did not run.
        assert_eq!(client.hit().await.unwrap(), "good");
        calls += 1;
        assert!(calls < 1000, "the refusing server was never picked");
    }
    assert_eq!(node.answered(), calls);
}

/// A server that completes the handshake and then reads and answers
/// nothing; returns its address.
async fn mute_after_handshake() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut hello = [0u8; 8];
            if stream.read_exact(&mut hello).await.is_ok() && stream.write_all(&HELLO).await.is_ok()
            {
                held.push(stream);
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_server_gone_silent_fail_over_by_keepalive() {
    let (good, _) = node("good", Duration::ZERO).await;
    let silent = mute_after_handshake().await;
    let channel = Channel::builder()
        .keepalive(Duration::from_millis(200), Duration::from_millis(200))
        .balanced(Static::new([good, silent]))
        .await
        .unwrap();
    let client = NodeClient::new(channel);
    // No deadline: only the keepalive can end a call the silent server
    // took; idempotent ones then go to the good server.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.name().await })
        })
        .collect();
    for call in calls {
        let answer = within_10s("a call to end", call).await.unwrap();
        assert_eq!(answer.unwrap(), "good");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_endpoint_does_not_hold_up_the_start() {
    let (good, _) = node("good", Duration::ZERO).await;
    // Accepts, and never answers the handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute = listener.local_addr().unwrap().to_string();
    let start = Channel::builder()
        .handshake_timeout(Duration::from_secs(60))
        .balanced(Static::new([good, mute]));
    let channel = within_10s(
        "the channel to start before the 60 s handshake timeout",
        start,
    )
    .await
    .unwrap();
    assert_eq!(NodeClient::new(channel).hit().await.unwrap(), "good");
    drop(listener);
}

/// A server that reads one request, says with a DRAIN that it read it,
/// then says with a second DRAIN that it did not.
async fn lying_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hello = [0u8; 8];
                stream.read_exact(&mut hello).await?;
                stream.write_all(&HELLO).await?;
                let payload = rpc_tests::read_frame(&mut stream).await;
                let id = u64::from_le_bytes(payload[2..10].try_into().unwrap());
                for first_unread in [id + 1, id] {
                    let mut drain = 10u32.to_le_bytes().to_vec();
                    drain.extend_from_slice(&[0x07, 0]);
                    drain.extend_from_slice(&first_unread.to_le_bytes());
                    stream.write_all(&drain).await?;
                }
                let _ = rpc_tests::read_until_closed(&mut stream).await;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_contradicts_itself_does_not_get_a_call_run_twice() {
    let (good, node) = node("good", Duration::ZERO).await;
    let liar = lying_server().await;
    // The liar is nearly always picked; the good node is there to be
    // retried on, which must not happen.
    let endpoints = [Endpoint::new(liar).weight(10_000), Endpoint::new(good)];
    let channel = Channel::balanced(Static::endpoints(endpoints))
        .await
        .unwrap();
    let error = within_10s("the call to end", NodeClient::new(channel).hit())
        .await
        .unwrap_err();
    // It was read, so it may have run: it fails, and is not sent again.
    assert!(
        matches!(&error, RpcError::ConnectionClosed { .. }),
        "{error}"
    );
    assert_eq!(node.answered(), 0, "the call was sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_that_change_under_load_do_not_break_the_pick() {
    let (a, _) = node("a", Duration::ZERO).await;
    let (b, _) = node("b", Duration::ZERO).await;
    let (changes, source) = futures::channel::mpsc::unbounded();
    let insert = |key: &str, address: &str, weight: u32| Change::Insert {
        key: key.to_owned(),
        endpoint: Endpoint::new(address).weight(weight),
    };
    changes
        .unbounded_send(Ok(vec![insert("a", &a, 1), insert("b", &b, 1)]))
        .unwrap();
    let channel = Channel::balanced(source.boxed()).await.unwrap();
    connected(&channel, 2).await;
    let flipping = tokio::spawn(async move {
        for i in 0..20_000u32 {
            let weight = if i % 2 == 0 { 1_000_000 } else { 1 };
            if changes
                .unbounded_send(Ok(vec![insert("b", &b, weight)]))
                .is_err()
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    let counts = tally(&NodeClient::new(channel), 4, 500).await;
    assert_eq!(counts.values().sum::<usize>(), 2000, "{counts:?}");
    flipping.abort();
}

#[tokio::test]
async fn endpoints_that_are_not_host_and_port_are_skipped() {
    let (good, _) = node("good", Duration::ZERO).await;
    let endpoints = [
        Endpoint::new("not an address at all"),
        Endpoint::new("x".repeat(100_000)),
        Endpoint::new(good),
    ];
    let channel = Channel::balanced(Static::endpoints(endpoints))
        .await
        .unwrap();
    let listed: Vec<String> = channel.endpoints().into_iter().map(|e| e.address).collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(NodeClient::new(channel).hit().await.unwrap(), "good");
}
