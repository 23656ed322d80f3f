//! With cargo feature `opentelemetry`, a call's client and server spans
//! are one OpenTelemetry trace: the client sends W3C `traceparent` and the
//! server's span continues it.

use opentelemetry::trace::{SpanKind, TraceContextExt, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rpc_core::{CallContext, Channel, Server, rpc_service};
use rpc_tests::serve;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// What the traced calls do.
#[rpc_service]
pub trait Relay {
    /// The `traceparent` the call carried.
    async fn traceparent(&self) -> Option<String>;
}

struct Imp;

impl Relay for Imp {
    async fn traceparent(&self) -> Option<String> {
        let cx = CallContext::current()?;
        cx.metadata().get_str("traceparent").map(str::to_owned)
    }
}

/// Spans of this thread go to OpenTelemetry, and from there to the
/// exporter, while the guard is held.
fn exporting() -> (
    InMemorySpanExporter,
    SdkTracerProvider,
    tracing::subscriber::DefaultGuard,
) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("rpc-tests")));
    let guard = tracing::subscriber::set_default(subscriber);
    (exporter, provider, guard)
}

/// The one span of `kind`.
fn of_kind(spans: &[SpanData], kind: SpanKind) -> &SpanData {
    spans
        .iter()
        .find(|span| span.span_kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} span in {spans:#?}"))
}

/// The span named `name`.
fn find<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[tokio::test(flavor = "current_thread")]
async fn the_server_span_continues_the_clients_trace() {
    let (exporter, provider, _guard) = exporting();

    let addr = serve(Server::builder().add_service(RelayServer::new(Imp))).await;
    let client = RelayClient::new(Channel::connect(addr).await.unwrap());
    // Inside a span of the application's: the client span is its child.
    let request = tracing::info_span!("handle_request");
    let request_trace = request.context().span().span_context().trace_id();
    let traceparent = tracing::Instrument::instrument(client.traceparent(), request.clone())
        .await
        .unwrap()
        .expect("the call carried a traceparent");
    drop(request);
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let client_span = of_kind(&spans, SpanKind::Client);
    let server_span = of_kind(&spans, SpanKind::Server);
    assert_eq!(client_span.name, "Relay/traceparent");
    assert_eq!(server_span.name, "Relay/traceparent");
    let handle = find(&spans, "handle_request");

    assert_eq!(client_span.span_context.trace_id(), request_trace);
    assert_eq!(client_span.parent_span_id, handle.span_context.span_id());
    assert_eq!(
        server_span.span_context.trace_id(),
        client_span.span_context.trace_id(),
        "one trace across the wire"
    );
    assert_eq!(
        server_span.parent_span_id,
        client_span.span_context.span_id()
    );
    assert!(server_span.parent_span_is_remote);
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            client_span.span_context.trace_id(),
            client_span.span_context.span_id()
        )
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_call_spans_context_goes_ahead_of_a_channels_own_traceparent() {
    let (exporter, provider, _guard) = exporting();

    let addr = serve(Server::builder().add_service(RelayServer::new(Imp))).await;
    // A broken header of the channel's own never fails the call, and the
    // server reads the call span's, which goes first.
    let channel = Channel::connect(addr).await.unwrap();
    let seen: Option<String> = channel
        .with_metadata("traceparent", "00-not-a-trace-01")
        .call("Relay", "traceparent", ())
        .await
        .unwrap();
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let client_span = of_kind(&spans, SpanKind::Client);
    let server_span = of_kind(&spans, SpanKind::Server);
    assert_eq!(
        server_span.parent_span_id,
        client_span.span_context.span_id()
    );
    assert_eq!(
        seen.unwrap(),
        format!(
            "00-{}-{}-01",
            client_span.span_context.trace_id(),
            client_span.span_context.span_id()
        )
    );
}
