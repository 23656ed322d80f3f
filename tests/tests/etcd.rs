//! Registration and discovery through a real etcd, started by each test
//! on free loopback ports (tests/src/etcd.rs), with servers as processes
//! of their own that register themselves.
//!
//! These need rpc-core's `etcd` feature, whose build runs `protoc`:
//! `cargo test -p rpc-tests --features etcd --test etcd`. Without the
//! feature one test says so and passes (`.ci/run` runs them in a build of
//! their own, with the feature); with it and without etcd installed, each
//! test says so and passes, unless `RPC_REQUIRE_ETCD` is set (as `.ci/run`
//! does), when it fails.

#[cfg(not(feature = "etcd"))]
#[test]
fn the_etcd_tests_need_the_etcd_feature() {
    // `.ci/run` runs them in a build of their own, with the feature.
    eprintln!(
        "skipped the etcd tests: built without feature `etcd` (its build needs protoc); \
         run `cargo test -p rpc-tests --features etcd --test etcd`"
    );
}

#[cfg(feature = "etcd")]
mod with_etcd {
    use std::time::Duration;

    use futures::StreamExt;
    use rpc_core::discovery::{Change, Discover, Etcd};
    use rpc_core::{Channel, Server};
    use rpc_tests::cluster::{NodeClient, NodeImpl, NodeServer};
    use rpc_tests::etcd;
    use rpc_tests::process::NodeProcess;
    use rpc_tests::within_10s;

    const NODE: &str = env!("CARGO_BIN_EXE_cluster-node");
    const PREFIX: &str = "services/Node";

    /// A node process registered in `etcd` with a lease of `ttl` seconds.
    fn registered(name: &str, etcd: &etcd::Etcd, ttl: u32) -> NodeProcess {
        let url = etcd.url();
        let ttl = ttl.to_string();
        let args = [name, "--etcd", &url, "--prefix", PREFIX, "--ttl", &ttl];
        NodeProcess::start(NODE, &args)
    }

    /// Until the channel's endpoints are exactly those of `nodes`.
    async fn endpoints_are(channel: &Channel, nodes: &[&NodeProcess]) {
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        rpc_tests::cluster::endpoints_are(channel, &addrs).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_follows_servers_as_they_register_and_leave() {
        let Some(binary) = etcd::binary_or_skip("a_client_follows_servers") else {
            return;
        };
        let etcd = etcd::Etcd::start(binary);
        let a = registered("a", &etcd, 5);
        let mut b = registered("b", &etcd, 5);
        let source = Etcd::discover(&[etcd.url()], PREFIX).await.unwrap();
        let channel = Channel::balanced(source).await.unwrap();
        endpoints_are(&channel, &[&a, &b]).await;
        let client = NodeClient::new(channel.clone());

        let c = registered("c", &etcd, 5);
        endpoints_are(&channel, &[&a, &b, &c]).await;
        let mut seen = std::collections::HashSet::new();
        while seen.len() < 3 {
            seen.insert(client.hit().await.unwrap());
        }

        // Calls go on while b shuts down: it leaves etcd, then drains.
        let calling = {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    client
                        .hit()
                        .await
                        .expect("no call fails while a node leaves");
                }
            })
        };
        assert!(b.shut_down().success());
        endpoints_are(&channel, &[&a, &c]).await;
        calling.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_graceful_shutdown_deletes_the_key_before_the_drain() {
        let Some(binary) = etcd::binary_or_skip("a_graceful_shutdown_deletes_the_key") else {
            return;
        };
        let etcd = etcd::Etcd::start(binary);
        let server = Server::builder()
            .add_service(NodeServer::new(NodeImpl::new("n", Duration::ZERO)))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let registration = Etcd::register(&[etcd.url()], PREFIX, server.local_addr())
            .await
            .unwrap();
        assert_eq!(
            registration.key(),
            format!("{PREFIX}/{}", server.local_addr())
        );
        let listed = || async {
            let source = Etcd::discover(&[etcd.url()], PREFIX).await.unwrap();
            source.watch().next().await.unwrap().unwrap().len()
        };
        assert_eq!(listed().await, 1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (told, at_drain) = tokio::sync::oneshot::channel();
        let signal = async move {
            let _ = stopped.await;
        };
        let withdrawn = registration.withdraw_after(signal);
        let url = etcd.url();
        // What etcd lists at the moment the server begins to drain.
        let shutdown = async move {
            withdrawn.await;
            let source = Etcd::discover(&[url], PREFIX).await.unwrap();
            let first = source.watch().next().await.unwrap().unwrap();
            let _ = told.send(first.len());
        };
        let serving = tokio::spawn(server.serve_with_shutdown(shutdown));
        stop.send(()).unwrap();
        assert_eq!(within_10s("the drain", at_drain).await.unwrap(), 0);
        within_10s("the server to stop", serving)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_server_leaves_discovery_when_its_lease_expires() {
        let Some(binary) = etcd::binary_or_skip("a_killed_server_leaves_discovery") else {
            return;
        };
        let etcd = etcd::Etcd::start(binary);
        let a = registered("a", &etcd, 5);
        let mut doomed = registered("doomed", &etcd, 2);
        let mut changes = Etcd::discover(&[etcd.url()], PREFIX).await.unwrap().watch();
        assert_eq!(changes.next().await.unwrap().unwrap().len(), 2);
        let killed = std::time::Instant::now();
        doomed.kill();
        let removed = within_10s("the lease to expire", changes.next())
            .await
            .unwrap()
            .unwrap();
        let key = format!("{PREFIX}/{}", doomed.addr);
        assert_eq!(removed, vec![Change::Remove { key }]);
        // Not before its TTL: the lease, not the connection, removed it.
        assert!(
            killed.elapsed() >= Duration::from_secs(1),
            "{:?}",
            killed.elapsed()
        );
        drop(a);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_keep_their_endpoints_while_etcd_restarts_and_then_follow_it_again() {
        let Some(binary) = etcd::binary_or_skip("clients_keep_their_endpoints") else {
            return;
        };
        let mut etcd = etcd::Etcd::start(binary);
        let a = registered("a", &etcd, 5);
        let source = Etcd::discover(&[etcd.url()], PREFIX).await.unwrap();
        let channel = Channel::balanced(source).await.unwrap();
        endpoints_are(&channel, &[&a]).await;
        let client = NodeClient::new(channel.clone());

        etcd.kill();
        for _ in 0..50 {
            assert_eq!(client.hit().await.unwrap(), "a");
        }
        etcd.restart();
        let b = registered("b", &etcd, 5);
        endpoints_are(&channel, &[&a, &b]).await;
        let mut seen = std::collections::HashSet::new();
        while seen.len() < 2 {
            seen.insert(client.hit().await.unwrap());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_in_etcd_takes_an_endpoint_out_instead_of_being_dialled() {
        let Some(binary) = etcd::binary_or_skip("garbage_in_etcd") else {
            return;
        };
        let etcd = etcd::Etcd::start(binary);
        let a = registered("a", &etcd, 5);
        let b = registered("b", &etcd, 5);
        let source = Etcd::discover(&[etcd.url()], PREFIX).await.unwrap();
        let channel = Channel::balanced(source).await.unwrap();
        endpoints_are(&channel, &[&a, &b]).await;

        let mut raw = etcd_client::Client::connect([etcd.url()], None)
            .await
            .unwrap();
        // b's key now says nothing usable: b leaves, as a listing would
        // find; a huge value and a non-address are never dialled.
        let b_key = format!("{PREFIX}/{}", b.addr);
        raw.put(b_key, "{garbage", None).await.unwrap();
        raw.put(format!("{PREFIX}/huge"), "x".repeat(200_000), None)
            .await
            .unwrap();
        raw.put(format!("{PREFIX}/words"), "not an address at all", None)
            .await
            .unwrap();
        endpoints_are(&channel, &[&a]).await;
        let client = NodeClient::new(channel.clone());
        for _ in 0..20 {
            assert_eq!(client.hit().await.unwrap(), "a");
        }
    }
}
