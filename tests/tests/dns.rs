//! DNS discovery through hickory's resolver against a DNS server on
//! loopback whose records the tests change.

use std::net::Ipv4Addr;
use std::time::Duration;

use rpc_core::discovery::Dns;
use rpc_core::{Channel, Server};
use rpc_tests::cluster::{NodeClient, NodeImpl, NodeServer, endpoints_are};
use rpc_tests::dns::{DnsServer, Record};
use rpc_tests::within_10s;

/// A node named `name` served on `ip`:`port` (port 0: any).
async fn node_on(name: &str, ip: &str, port: u16) -> std::net::SocketAddr {
    let server = Server::builder()
        .add_service(NodeServer::new(NodeImpl::new(name, Duration::ZERO)))
        .bind((ip, port))
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    addr
}

fn a(name: &str, ip: [u8; 4]) -> Record {
    Record::A {
        name: name.into(),
        ip: Ipv4Addr::from(ip),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_a_record_is_followed_once_its_ttl_runs_out() {
    // One port on two loopback addresses: A records carry no port.
    let first = node_on("first", "127.0.0.1", 0).await;
    let second = node_on("second", "127.0.0.2", first.port()).await;
    let dns = DnsServer::start(1).await;
    dns.set(vec![a("calc.test", [127, 0, 0, 1])]);
    let source = Dns::new(&format!("calc.test:{}", first.port()))
        .nameserver(dns.addr)
        .refresh(Duration::from_millis(50), Duration::from_secs(5));
    let channel = Channel::balanced(source).await.unwrap();
    let client = NodeClient::new(channel.clone());
    assert_eq!(client.hit().await.unwrap(), "first");

    dns.set(vec![
        a("calc.test", [127, 0, 0, 1]),
        a("calc.test", [127, 0, 0, 2]),
    ]);
    endpoints_are(&channel, &[first.to_string(), second.to_string()]).await;
    dns.set(vec![a("calc.test", [127, 0, 0, 2])]);
    endpoints_are(&channel, &[second.to_string()]).await;
    for _ in 0..20 {
        assert_eq!(client.hit().await.unwrap(), "second");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_and_weights() {
    let one = node_on("one", "127.0.0.1", 0).await;
    let two = node_on("two", "127.0.0.1", 0).await;
    let dns = DnsServer::start(1).await;
    let srv = |port: u16, weight: u16| Record::Srv {
        name: "_rpc._tcp.calc.test".into(),
        weight,
        port,
        target: "host.calc.test".into(),
    };
    dns.set(vec![
        srv(one.port(), 1),
        a("host.calc.test", [127, 0, 0, 1]),
    ]);
    let source = Dns::srv("_rpc._tcp.calc.test")
        .nameserver(dns.addr)
        .refresh(Duration::from_millis(50), Duration::from_secs(5));
    let channel = Channel::balanced(source).await.unwrap();
    endpoints_are(&channel, &[one.to_string()]).await;

    dns.set(vec![
        srv(one.port(), 1),
        srv(two.port(), 4),
        a("host.calc.test", [127, 0, 0, 1]),
    ]);
    endpoints_are(&channel, &[one.to_string(), two.to_string()]).await;
    let weights: Vec<(String, u32)> = channel
        .endpoints()
        .into_iter()
        .map(|e| (e.address, e.weight))
        .collect();
    assert!(weights.contains(&(two.to_string(), 4)), "{weights:?}");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_the_channels_error() {
    let dns = DnsServer::start(1).await;
    let source = Dns::new("missing.test:7878").nameserver(dns.addr);
    // NXDOMAIN is an answer: no endpoints, and calls say so.
    let channel = Channel::balanced(source).await.unwrap();
    let error = NodeClient::new(channel).hit().await.unwrap_err();
    assert!(error.to_string().contains("knows none"), "{error}");

    let error = Channel::balanced(Dns::new("no-port-here"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("is not `name:port`"), "{error}");

    // A server that never answers: the resolver's own timeout, then an
    // error, not a hang.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let source = Dns::new("calc.test:7878").nameserver(silent.local_addr().unwrap());
    let error = within_10s("the resolver to give up", Channel::balanced(source))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("did not resolve"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srv_target_that_does_not_resolve_is_left_out() {
    let one = node_on("one", "127.0.0.1", 0).await;
    let dns = DnsServer::start(1).await;
    let srv = |target: &str, port: u16| Record::Srv {
        name: "_rpc._tcp.calc.test".into(),
        weight: 1,
        port,
        target: target.into(),
    };
    dns.set(vec![
        srv("host.calc.test", one.port()),
        srv("gone.calc.test", 1),
        a("host.calc.test", [127, 0, 0, 1]),
    ]);
    let source = Dns::srv("_rpc._tcp.calc.test").nameserver(dns.addr);
    let channel = Channel::balanced(source).await.unwrap();
    endpoints_are(&channel, &[one.to_string()]).await;
}
