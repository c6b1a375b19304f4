//! The trace context as SQS message attributes (`traceparent`, `tracestate`, type String), the
//! carrier the OpenTelemetry messaging conventions name for SQS.

use std::collections::HashMap;

use aws_sdk_sqs::types::MessageAttributeValue;

use super::TraceCarrier;
pub use crate::telemetry::propagation::{TRACEPARENT, TRACESTATE};

/// The attributes of an outgoing message; `None` (no attributes at all) without a context.
pub fn trace_attributes(trace: &TraceCarrier) -> Option<HashMap<String, MessageAttributeValue>> {
    let fields = [
        (TRACEPARENT, &trace.traceparent),
        (TRACESTATE, &trace.tracestate),
    ];
    let attributes: HashMap<String, MessageAttributeValue> = fields
        .into_iter()
        .filter_map(|(name, value)| {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value.as_deref()?)
                .build()
                .ok()?;
            Some((name.to_string(), value))
        })
        .collect();
    (!attributes.is_empty()).then_some(attributes)
}

/// The context a received message carries (empty when it has none).
pub fn trace_of(attributes: Option<&HashMap<String, MessageAttributeValue>>) -> TraceCarrier {
    let field = |name: &str| attributes?.get(name)?.string_value().map(str::to_string);
    TraceCarrier {
        traceparent: field(TRACEPARENT),
        tracestate: field(TRACESTATE),
    }
}
