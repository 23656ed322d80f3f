//! With cargo feature `metrics`, calls, connections and bytes are counted
//! through the `metrics` facade (docs/OBSERVABILITY.md), as a recorder
//! sees them: here metrics-util's debugging recorder.

use futures::StreamExt;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rpc_core::{Channel, Code, Rejection, Server, Streaming, rpc_service};
use rpc_tests::{eventually, serve};

/// What the metered calls do.
#[rpc_service]
pub trait Metered {
    /// Answers.
    async fn ok(&self) -> u32;
    /// Refused.
    async fn refused(&self) -> Result<u32, Rejection>;
    /// `0..count`.
    async fn count(&self, count: u32) -> Streaming<u32>;
}

struct Imp;

impl Metered for Imp {
    async fn ok(&self) -> u32 {
        1
    }
    async fn refused(&self) -> Result<u32, Rejection> {
        Err(Rejection::permission_denied("no"))
    }
    async fn count(&self, count: u32) -> Streaming<u32> {
        Streaming::from_iter(0..count)
    }
}

/// What the recorder has seen so far. Its snapshots are deltas (each one
/// swaps every value to zero), so they add up here: counters and gauges
/// (which the toolkit only moves up and down) by sum, histograms by
/// concatenation.
struct Readings {
    snapshotter: Snapshotter,
    seen: Vec<(MetricKind, String, Labels, Reading)>,
}

/// A metric's labels, as key and value.
type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
enum Reading {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

impl Readings {
    fn refresh(&mut self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let name = key.key().name().to_owned();
            let labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let found = self
                .seen
                .iter_mut()
                .find(|(k, n, l, _)| *k == key.kind() && *n == name && *l == labels);
            let reading = match found {
                Some((_, _, _, reading)) => reading,
                None => {
                    let empty = match value {
                        DebugValue::Counter(_) => Reading::Counter(0),
                        DebugValue::Gauge(_) => Reading::Gauge(0.0),
                        DebugValue::Histogram(_) => Reading::Histogram(Vec::new()),
                    };
                    self.seen.push((key.kind(), name, labels, empty));
                    &mut self.seen.last_mut().unwrap().3
                }
            };
            match (reading, value) {
                (Reading::Counter(n), DebugValue::Counter(d)) => *n += d,
                (Reading::Gauge(n), DebugValue::Gauge(d)) => *n += d.into_inner(),
                (Reading::Histogram(xs), DebugValue::Histogram(ys)) => {
                    xs.extend(ys.into_iter().map(|y| y.into_inner()))
                }
                (reading, value) => panic!("{reading:?} then {value:?}"),
            }
        }
    }

    /// The metric `name` of `kind` whose labels include each of `labels`.
    fn get(&mut self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> Option<Reading> {
        self.refresh();
        self.seen
            .iter()
            .find(|(k, n, l, _)| {
                *k == kind
                    && n == name
                    && labels
                        .iter()
                        .all(|(key, value)| l.iter().any(|(k, v)| k == key && v == value))
            })
            .map(|(_, _, _, reading)| reading.clone())
    }

    fn counter(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(MetricKind::Counter, name, labels) {
            Some(Reading::Counter(n)) => n,
            None => 0,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn gauge(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.get(MetricKind::Gauge, name, labels) {
            Some(Reading::Gauge(n)) => n,
            None => 0.0,
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// One test: the recorder is the process's, installed once.
#[tokio::test]
async fn calls_connections_and_bytes_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let mut readings = Readings {
        snapshotter,
        seen: Vec::new(),
    };

    let addr = serve(Server::builder().add_service(MeteredServer::new(Imp))).await;
    let channel = Channel::connect(addr).await.unwrap();
    eventually("the server counts the connection", || {
        readings.gauge("rpc_server_connections_open", &[]) == 1.0
    })
    .await;
    assert_eq!(readings.gauge("rpc_client_connections_open", &[]), 1.0);

    let client = MeteredClient::new(channel.clone());
    for _ in 0..3 {
        assert_eq!(client.ok().await.unwrap(), 1);
    }
    let refused = client.refused().await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::PermissionDenied));
    let items = client.count(10).await.unwrap().count().await;
    assert_eq!(items, 10);

    // Names the server does not have are labelled `unknown` on its side:
    // a client cannot grow the labels without bound.
    for (service, method) in [("Metered", "made-up-1"), ("Made-up", "made-up-2")] {
        let unknown: Result<(), _> = channel.call(service, method, ()).await;
        assert!(unknown.is_err());
    }
    eventually("the server counts unknown names as `unknown`", || {
        readings.counter(
            "rpc_server_calls_finished_total",
            &[
                ("service", "Metered"),
                ("method", "unknown"),
                ("status", "UNKNOWN_METHOD"),
            ],
        ) == 1
            && readings.counter(
                "rpc_server_calls_finished_total",
                &[
                    ("service", "unknown"),
                    ("method", "unknown"),
                    ("status", "UNKNOWN_SERVICE"),
                ],
            ) == 1
    })
    .await;
    for made_up in ["made-up-1", "made-up-2", "Made-up"] {
        assert!(
            readings
                .seen
                .iter()
                .all(|(_, name, labels, _)| name.starts_with("rpc_client")
                    || labels.iter().all(|(_, v)| v != made_up)),
            "a server metric is labelled {made_up}"
        );
    }

    let ok = [("service", "Metered"), ("method", "ok")];
    let ok_done = [("service", "Metered"), ("method", "ok"), ("status", "OK")];
    let denied = [
        ("service", "Metered"),
        ("method", "refused"),
        ("status", "PERMISSION_DENIED"),
    ];
    for side in ["server", "client"] {
        let name = |what: &str| format!("rpc_{side}_{what}");
        assert_eq!(
            readings.counter(&name("calls_started_total"), &ok),
            3,
            "{side}"
        );
        assert_eq!(
            readings.counter(&name("calls_finished_total"), &ok_done),
            3,
            "{side}"
        );
        assert_eq!(
            readings.counter(&name("calls_finished_total"), &denied),
            1,
            "{side}"
        );
        assert_eq!(readings.gauge(&name("calls_in_flight"), &ok), 0.0, "{side}");
        match readings.get(
            MetricKind::Histogram,
            &name("call_duration_seconds"),
            &ok_done,
        ) {
            Some(Reading::Histogram(seconds)) => {
                assert_eq!(seconds.len(), 3, "{side}: one latency per call");
                assert!(seconds.iter().all(|s| *s >= 0.0));
            }
            other => panic!("{side}: no latency histogram: {other:?}"),
        }
    }
    eventually("the server counts the stream call's end", || {
        readings.counter(
            "rpc_server_calls_finished_total",
            &[("method", "count"), ("status", "OK")],
        ) == 1
    })
    .await;
    // Bytes each way: at least the handshakes and the calls' frames, and
    // what one side sent is what the other received.
    let sent = readings.counter("rpc_client_bytes_sent_total", &[]);
    assert!(sent > 5 * 20, "{sent} bytes sent");
    eventually("the server received what the client sent", || {
        readings.counter("rpc_server_bytes_received_total", &[]) == sent
    })
    .await;
    let received = readings.counter("rpc_client_bytes_received_total", &[]);
    assert_eq!(
        readings.counter("rpc_server_bytes_sent_total", &[]),
        received
    );

    drop((client, channel));
    eventually("both sides count the connection closed", || {
        readings.gauge("rpc_server_connections_open", &[]) == 0.0
            && readings.gauge("rpc_client_connections_open", &[]) == 0.0
    })
    .await;
}
