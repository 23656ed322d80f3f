//! The `tracing` span of each call, on each side, named and fielded after
//! OpenTelemetry's semantic conventions for RPC (docs/OBSERVABILITY.md
//! lists every field).
//!
//! With no subscriber, or one that does not want them, there is no span
//! (`None`, not even a disabled `Span`, whose moves and drop cost the
//! client about 40 instructions a call): one check per call, no field
//! evaluated, and nothing entered or recorded (with tracing's `log` feature, which another crate
//! may turn on, even a disabled span costs a `log` check each time it is
//! entered: measured at 160 instructions per call).

use tracing::Span;
use tracing::field::Empty;

use crate::error::RpcError;
use crate::metadata::Metadata;
use crate::status::Code;
use crate::transport::PeerAddr;

/// `rpc.system`: what OpenTelemetry calls the protocol.
pub(crate) const SYSTEM: &str = "rkit";

/// The span of a call the server read. Its duration is the call's, from
/// the request read to the answer queued.
/// With cargo feature `opentelemetry`, the span continues the trace whose
/// context the call's metadata carries.
pub(crate) fn server(
    service: &str,
    method: &str,
    id: u64,
    peer: &PeerAddr,
    metadata: Metadata<'_>,
) -> Option<Span> {
    if !wanted() {
        return None;
    }
    let span = tracing::info_span!(
        target: "rpc_core::call",
        "rpc.server",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = SYSTEM,
        rpc.service = service,
        rpc.method = method,
        rpc.request_id = id,
        network.peer.address = %peer,
        rpc.response.status_code = Empty,
        error.type = Empty,
        rpc.items_sent = Empty,
        rpc.items_received = Empty,
    );
    #[cfg(feature = "opentelemetry")]
    crate::otel::extract(&span, metadata);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = metadata;
    Some(span)
}

/// The span of a call a client makes. Its duration is the call's, from the
/// call to its answer, or to the end of the stream it returns.
pub(crate) fn client(service: &str, method: &str) -> Option<Span> {
    if !wanted() {
        return None;
    }
    Some(tracing::info_span!(
        target: "rpc_core::call",
        "rpc.client",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "client",
        otel.status_code = Empty,
        rpc.system = SYSTEM,
        rpc.service = service,
        rpc.method = method,
        rpc.request_id = Empty,
        rpc.response.status_code = Empty,
        error.type = Empty,
        rpc.items_sent = Empty,
        rpc.items_received = Empty,
    ))
}

/// Whether a subscriber wants call spans.
fn wanted() -> bool {
    tracing::span_enabled!(target: "rpc_core::call", tracing::Level::INFO)
}

/// Runs `f` in `span`, or just runs it when there is none.
pub(crate) fn within<R>(span: &Option<Span>, f: impl FnOnce() -> R) -> R {
    match span {
        Some(span) => span.in_scope(f),
        None => f(),
    }
}

/// Records how the call ended: its status, or, for a failure no status
/// describes (the connection closed, say), the kind of error.
pub(crate) fn ended(span: &Span, code: Option<Code>) {
    if span.is_disabled() {
        return;
    }
    match code {
        Some(Code::Ok) => {
            span.record("rpc.response.status_code", "OK");
        }
        Some(code) => {
            let code = code.to_string();
            span.record("rpc.response.status_code", code.as_str());
            span.record("error.type", code.as_str());
            span.record("otel.status_code", "ERROR");
        }
        None => {
            span.record("error.type", "UNKNOWN");
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// Records a client call's outcome.
pub(crate) fn ended_with<T>(span: &Span, result: &Result<T, RpcError>) {
    match result {
        Ok(_) => ended(span, Some(Code::Ok)),
        Err(e) => failed(span, e),
    }
}

/// Records the error a call ended with.
pub(crate) fn failed(span: &Span, e: &RpcError) {
    if span.is_disabled() {
        return;
    }
    match e.code() {
        Some(code) => ended(span, Some(code)),
        None => {
            span.record("error.type", error_kind(e));
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// A short, stable name for an error no status describes.
fn error_kind(e: &RpcError) -> &'static str {
    match e {
        RpcError::Connect { .. } => "CONNECT",
        RpcError::ConnectionClosed { .. } => "CONNECTION_CLOSED",
        RpcError::NotProcessed { .. } => "NOT_PROCESSED",
        RpcError::Protocol(_) => "PROTOCOL",
        RpcError::Encode { .. } => "ENCODE",
        RpcError::Decode { .. } => "DECODE",
        RpcError::FrameTooLarge { .. } => "FRAME_TOO_LARGE",
        _ => "OTHER",
    }
}
