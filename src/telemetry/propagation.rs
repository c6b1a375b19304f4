//! W3C Trace Context across the hops: `traceparent`/`tracestate` from an HTTP request, and the
//! same two fields in every queue message, so the worker's spans join the trace of the request
//! that placed the order.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The trace context a queue message carries: SQS message attributes on SQS, two columns of
/// the embedded queue. Empty when tracing is off, or for messages sent before it was on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceCarrier {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl TraceCarrier {
    /// The context of `span` (nothing when tracing is off or the span is disabled).
    pub fn of(span: &Span) -> TraceCarrier {
        if span.is_none() {
            return TraceCarrier::default();
        }
        let mut fields = HashMap::new();
        TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
        TraceCarrier {
            traceparent: fields.remove(TRACEPARENT),
            tracestate: fields.remove(TRACESTATE).filter(|s| !s.is_empty()),
        }
    }

    /// The remote context this carrier names, if it names a valid one.
    pub fn context(&self) -> Option<opentelemetry::Context> {
        let traceparent = self.traceparent.as_deref()?;
        let mut fields = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
        if let Some(state) = &self.tracestate {
            fields.insert(TRACESTATE.to_string(), state.clone());
        }
        let cx = TraceContextPropagator::new().extract(&fields);
        cx.span().span_context().is_valid().then_some(cx)
    }
}

/// Makes `span` (not yet entered) a child of the context in `headers`, when they carry one.
pub fn continue_from_headers(span: &Span, headers: &actix_web::http::header::HeaderMap) {
    if span.is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// `traceresponse` (W3C Trace Context level 2): the trace and span the server recorded, so a
/// client can find its request's trace.
pub fn trace_response(span: &Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carrier_yields_the_context_it_names() {
        let carrier = TraceCarrier {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: Some("vendor=1".into()),
        };
        let cx = carrier.context().expect("valid");
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote());
    }

    #[test]
    fn garbage_or_nothing_is_no_context() {
        assert!(TraceCarrier::default().context().is_none());
        let bad = TraceCarrier {
            traceparent: Some("00-zz-yy-01".into()),
            tracestate: None,
        };
        assert!(bad.context().is_none());
    }
}
