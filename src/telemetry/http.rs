//! The HTTP server span: named `METHOD /route/{template}`, parented to the client's
//! `traceparent`, with the semantic-convention attributes; and the trace id in the response.

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::Span;

use super::propagation;

const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");
const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// Fills in the server span's OpenTelemetry fields; called before the span is first entered.
pub fn server_span(span: &Span, req: &ServiceRequest, method: &str, route: &str) {
    span.record("otel.name", format!("{method} {route}"));
    span.record("otel.kind", "server");
    span.record("http.request.method", method);
    span.record("http.route", route);
    propagation::continue_from_headers(span, req.headers());
}

/// A 5xx is the server's failure; a 4xx is the client's and leaves the span unset, as the
/// conventions say for server spans.
pub fn record_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// `traceresponse` and `X-Trace-Id` on the response.
pub fn trace_headers(span: &Span, headers: &mut HeaderMap) {
    let Some(value) = propagation::trace_response(span) else {
        return;
    };
    if let Some(trace_id) = value.split('-').nth(1) {
        if let Ok(v) = HeaderValue::from_str(trace_id) {
            headers.insert(TRACE_ID, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(TRACERESPONSE, v);
    }
}
