//! W3C trace context on the wire (cargo feature `opentelemetry`): a client
//! call sends its span's context as the metadata `traceparent` (and
//! `tracestate`, when there is one), and the server's span of the call
//! takes it as its parent, so that both sides are one trace in any
//! OpenTelemetry backend. The format is the W3C Trace Context
//! recommendation's, version `00`; docs/OBSERVABILITY.md shows it.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metadata::{self, Metadata};

/// The metadata keys.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// `entries` (encoded metadata) with the trace context of `span` added;
/// `None` if the span belongs to no OpenTelemetry trace.
pub(crate) fn inject(span: &Span, entries: &[u8]) -> Option<Vec<u8>> {
    let context = span.context();
    let remote = context.span();
    let span_context = remote.span_context();
    if !span_context.is_valid() {
        return None;
    }
    // Ahead of the channel's own pairs: a server reads the first of a key,
    // and the call's span is the context the call is made in.
    let channel_entries = entries;
    let mut entries = Vec::with_capacity(channel_entries.len() + 128);
    let parent = format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    );
    metadata::put_entry(&mut entries, TRACEPARENT, parent.as_bytes());
    let state = span_context.trace_state().header();
    if !state.is_empty() {
        metadata::put_entry(&mut entries, TRACESTATE, state.as_bytes());
    }
    entries.extend_from_slice(channel_entries);
    Some(entries)
}

/// Makes the trace context a call carries the parent of `span`. A missing
/// or malformed `traceparent` leaves the span a root: a client's bad
/// header never fails its call.
pub(crate) fn extract(span: &Span, metadata: Metadata<'_>) {
    let Some(parent) = metadata.get_str(TRACEPARENT).and_then(parse) else {
        return;
    };
    let state = metadata
        .get_str(TRACESTATE)
        .and_then(|state| state.parse().ok())
        .unwrap_or_default();
    let parent = SpanContext::new(parent.0, parent.1, parent.2, true, state);
    let context = opentelemetry::Context::new().with_remote_span_context(parent);
    // Fails only for a span no OpenTelemetry layer tracks.
    let _ = span.set_parent(context);
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; later versions
/// are read as 00 is, as the recommendation asks, if they have its fields.
fn parse(header: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let mut parts = header.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    Some((trace, span, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_as_the_recommendation_says() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (trace, span, flags) = parse(good).unwrap();
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.to_string(), "00f067aa0ba902b7");
        assert!(flags.is_sampled());
        // A later version with more fields is read for the ones it shares.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra").is_some());
        for bad in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
