//! Every call has a `tracing` span on each side, fielded after
//! OpenTelemetry's RPC conventions (docs/OBSERVABILITY.md).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use rpc_core::{CallInfo, Channel, Code, Rejection, RpcError, Server, Streaming, rpc_service};
use rpc_tests::serve;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// What the traced calls do.
#[rpc_service]
pub trait Traced {
    /// Logs an event, then answers.
    async fn hello(&self, name: String) -> String;
    /// `0..count`.
    async fn count(&self, count: u32) -> Streaming<u32>;
    /// The sum of what is sent.
    async fn sum(&self, values: Streaming<u32>) -> u64;
    /// Refused.
    async fn refused(&self) -> Result<(), Rejection>;
}

struct Imp;

impl Traced for Imp {
    async fn hello(&self, name: String) -> String {
        tracing::info!("saying hello");
        format!("hello {name}")
    }
    async fn count(&self, count: u32) -> Streaming<u32> {
        Streaming::from_iter(0..count)
    }
    async fn sum(&self, mut values: Streaming<u32>) -> u64 {
        let mut sum = 0;
        while let Some(Ok(value)) = values.next().await {
            sum += u64::from(value);
        }
        sum
    }
    async fn refused(&self) -> Result<(), Rejection> {
        Err(Rejection::permission_denied("no"))
    }
}

/// A span as the subscriber saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    fields: BTreeMap<String, String>,
    /// Messages of the events inside it.
    events: Vec<String>,
    closed: bool,
}

/// Keeps every span of the `rpc_core::call` target.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(u64, Seen)>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().target() != "rpc_core::call" {
            return;
        }
        let mut seen = Seen {
            name: attrs.metadata().name().to_owned(),
            ..Seen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.0.lock().unwrap().push((id.into_u64(), seen));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, seen)) = spans.iter_mut().rev().find(|(i, _)| *i == id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, cx: Context<'_, S>) {
        let Some(span) = cx.event_span(event) else {
            return;
        };
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        if let Some((_, seen)) = spans
            .iter_mut()
            .rev()
            .find(|(i, _)| *i == span.id().into_u64())
        {
            seen.events.extend(fields.remove("message"));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, seen)) = spans.iter_mut().rev().find(|(i, _)| *i == id.into_u64()) {
            seen.closed = true;
        }
    }
}

impl Capture {
    /// The closed spans called `name` of calls to `method`.
    fn closed(&self, name: &str, method: &str) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, seen)| seen)
            .filter(|seen| {
                seen.closed
                    && seen.name == name
                    && seen.fields.get("rpc.method").map(String::as_str) == Some(method)
            })
            .cloned()
            .collect()
    }
}

/// A server and a client in this thread's subscriber, which `capture` sees.
async fn traced(capture: &Capture) -> (TracedClient, tracing::subscriber::DefaultGuard) {
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    let addr = serve(
        Server::builder()
            .interceptor(|call: &CallInfo<'_>| match call.method() {
                "hello" | "count" | "sum" | "refused" => Ok(()),
                _ => Err(Rejection::unauthenticated("not that one")),
            })
            .add_service(TracedServer::new(Imp)),
    )
    .await;
    let client = TracedClient::new(Channel::connect(addr).await.unwrap());
    (client, guard)
}

/// The field, which must be there.
fn field<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.fields
        .get(name)
        .unwrap_or_else(|| panic!("no `{name}` in {seen:?}"))
}

#[tokio::test(flavor = "current_thread")]
async fn a_unary_call_has_a_span_on_each_side() {
    let capture = Capture::default();
    let (client, _guard) = traced(&capture).await;
    assert_eq!(client.hello("ana".into()).await.unwrap(), "hello ana");

    let [server] = &capture.closed("rpc.server", "hello")[..] else {
        panic!("one server span: {:?}", capture.0.lock().unwrap());
    };
    let [client_span] = &capture.closed("rpc.client", "hello")[..] else {
        panic!("one client span: {:?}", capture.0.lock().unwrap());
    };
    for seen in [server, client_span] {
        assert_eq!(field(seen, "rpc.system"), "rkit");
        assert_eq!(field(seen, "rpc.service"), "Traced");
        assert_eq!(field(seen, "otel.name"), "Traced/hello");
        assert_eq!(field(seen, "rpc.response.status_code"), "OK");
        assert!(!seen.fields.contains_key("error.type"), "{seen:?}");
    }
    assert_eq!(field(server, "otel.kind"), "server");
    assert_eq!(field(client_span, "otel.kind"), "client");
    assert_eq!(
        field(server, "rpc.request_id"),
        field(client_span, "rpc.request_id"),
        "both sides name the same request"
    );
    assert!(field(server, "network.peer.address").starts_with("127.0.0.1:"));
    assert_eq!(
        server.events,
        ["saying hello"],
        "the handler's events are in its call's span"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn refused_and_failed_calls_record_their_status() {
    let capture = Capture::default();
    let (client, _guard) = traced(&capture).await;
    let refused = client.refused().await;
    assert_eq!(
        refused.as_ref().unwrap_err().code(),
        Some(Code::PermissionDenied)
    );
    let channel = rpc_core::RpcClient::channel(&client).clone();
    let rejected: Result<u32, RpcError> = channel.call("Traced", "other", ()).await;
    assert_eq!(rejected.unwrap_err().code(), Some(Code::Unauthenticated));

    for name in ["rpc.server", "rpc.client"] {
        let [seen] = &capture.closed(name, "refused")[..] else {
            panic!("one {name} span for `refused`");
        };
        assert_eq!(field(seen, "rpc.response.status_code"), "PERMISSION_DENIED");
        assert_eq!(field(seen, "error.type"), "PERMISSION_DENIED");
        assert_eq!(field(seen, "otel.status_code"), "ERROR");
        let [seen] = &capture.closed(name, "other")[..] else {
            panic!("one {name} span for the call the interceptor refused");
        };
        assert_eq!(field(seen, "rpc.response.status_code"), "UNAUTHENTICATED");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn stream_calls_count_their_items_each_way() {
    let capture = Capture::default();
    let (client, _guard) = traced(&capture).await;
    let items: Vec<u32> = client
        .count(300)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items.len(), 300);
    assert_eq!(
        client.sum(Streaming::from_iter(1..=200)).await.unwrap(),
        20_100
    );
    // The client's span of a server stream ends when the stream does.
    let server = &capture.closed("rpc.server", "count")[0];
    let client_span = &capture.closed("rpc.client", "count")[0];
    assert_eq!(field(server, "rpc.items_sent"), "300");
    assert_eq!(field(client_span, "rpc.items_received"), "300");
    assert_eq!(field(client_span, "rpc.response.status_code"), "OK");
    let server = &capture.closed("rpc.server", "sum")[0];
    let client_span = &capture.closed("rpc.client", "sum")[0];
    assert_eq!(field(client_span, "rpc.items_sent"), "200");
    assert_eq!(field(server, "rpc.items_received"), "200");
}
