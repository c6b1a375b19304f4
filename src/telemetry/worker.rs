//! The worker's side of a message's trace: the spans of one receive join the traces of the
//! requests that sent its messages.
//!
//! Child, not only link: SREs look for one trace per order, from the request to the email, and
//! Jaeger shows links only as references. So the receive span is a child of the first message's
//! send span, and links every other message's send span (the conventions' batch receive). A
//! receive of one message, the common case below saturation, is then entirely in its order's
//! trace; in a batch, the others' traces end at their send and point here through the links.

use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::spans;
use crate::queue::ReceivedMessage;

/// Opens the receive span (parent and links from the messages) and returns the process span
/// inside it, for the processing and deletion of the batch.
pub fn consume_spans(messages: &[ReceivedMessage]) -> Span {
    let receive = spans::queue_consume("receive", messages.len());
    if receive.is_none() {
        return Span::none();
    }
    let mut senders = messages.iter().filter_map(|m| m.trace.context());
    if let Some(parent) = senders.next() {
        let _ = receive.set_parent(parent);
    }
    for other in senders {
        receive.add_link(other.span().span_context().clone());
    }
    let process = spans::queue_consume("process", messages.len());
    let _ = process.set_parent(receive.context());
    process
}
