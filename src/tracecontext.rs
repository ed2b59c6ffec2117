//! W3C trace context across processes: `traceparent` (and `tracestate`) read from
//! an API request; `traceparent` kept with a queued job and taken up by the worker
//! that runs it; both sent on to the institution. One trace then shows an app's requested sync end to
//! end, whichever processes served it.
//!
//! Spans are `tracing` spans; the OpenTelemetry layer installed by
//! `app::telemetry` gives each a trace context. Without that layer (a library
//! user's own subscriber, most tests) every function here does nothing.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and job metadata key) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Makes `span` a child of the remote span `carrier` names, when it names a valid
/// one, and records the span's trace id in its `trace_id` field (so every log line
/// inside it carries the id). A missing or malformed `traceparent` starts a new
/// trace, as the W3C recommendation asks.
pub fn continue_from(span: &Span, carrier: &dyn Extractor) {
    let parent = TraceContextPropagator::new().extract(carrier);
    if parent.span().span_context().is_valid() {
        // Refused only for a span already started or disabled: it stays a root.
        let _ = span.set_parent(parent);
    }
    record_trace_id(span);
}

/// [`continue_from`] with an incoming request's headers.
pub fn continue_from_headers(span: &Span, headers: &axum::http::HeaderMap) {
    continue_from(span, &opentelemetry_http::HeaderExtractor(headers));
}

/// [`continue_from`] with a lone `traceparent` value, as a queued job keeps it.
pub fn continue_from_value(span: &Span, traceparent: Option<&str>) {
    let carrier: std::collections::HashMap<String, String> = traceparent
        .map(|value| (TRACEPARENT.to_owned(), value.to_owned()))
        .into_iter()
        .collect();
    continue_from(span, &carrier);
}

/// Records `span`'s trace id in its `trace_id` field, when it has one.
pub fn record_trace_id(span: &Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", tracing::field::display(id));
    }
}

/// The trace id of `span`, as 32 lowercase hex digits.
pub fn trace_id(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The `traceparent` of `span`, to hand to work that continues it elsewhere (a
/// queued job).
pub fn traceparent(span: &Span) -> Option<String> {
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Adds `span`'s `traceparent` (and `tracestate`) to an outgoing request's headers.
pub fn inject(span: &Span, headers: &mut reqwest::header::HeaderMap) {
    TraceContextPropagator::new().inject_context(
        &span.context(),
        &mut opentelemetry_http::HeaderInjector(headers),
    );
}
