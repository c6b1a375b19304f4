//! The spans of the order flow's hops, with the OpenTelemetry semantic-convention attributes a
//! trace viewer groups and colours by: `db.system.name`/`db.operation.name` for the store and the
//! cache, `messaging.*` for the queue, `rpc.*` for SES.
//!
//! These spans exist only while traces are exported ([`enabled`]): with tracing off they are
//! `Span::none()` and cost a branch, so turning tracing on is the whole of its price (measured
//! in BENCHMARKS.md). The request and per-message spans that carry log fields are made either
//! way, elsewhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tracing::field::Empty;
use tracing::Span;

use crate::backends::BackendKinds;
use crate::error::BackendError;

static ENABLED: AtomicBool = AtomicBool::new(false);
static KINDS: OnceLock<BackendKinds> = OnceLock::new();

/// Spans are exported: set once at start by `telemetry::init`.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(super) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Which implementation backs each trait, for the `*.system` attributes.
pub fn set_backend_kinds(kinds: BackendKinds) {
    let _ = KINDS.set(kinds);
}

fn kinds() -> Option<BackendKinds> {
    KINDS.get().copied()
}

/// A backend call is traced inside a request or a message only: the worker's periodic depth
/// poll and other housekeeping would otherwise start a trace of their own every few seconds.
fn in_a_trace() -> bool {
    enabled() && !Span::current().is_none()
}

/// The queue's name in `messaging.destination.name`.
const QUEUE: &str = "orders";

/// One call to a backend, named `<operation> <backend>` as the conventions name client spans.
pub fn backend(backend: &'static str, operation: &'static str) -> Span {
    if !in_a_trace() {
        return Span::none();
    }
    let kind = kinds();
    match backend {
        "store" => {
            let system = match kind.map(|k| k.store) {
                Some("mongodb") => "mongodb",
                _ => "sqlite",
            };
            db_span(system, operation)
        }
        // The send's span is the producer span whose context the message carries.
        "queue" => queue_span(
            operation,
            if operation == "send" {
                "producer"
            } else {
                "client"
            },
        ),
        // On SES, an email's span covers its wait for company and the bulk request it joined
        // (see `mail::batcher`).
        "mailer" => {
            let ses = kind.is_some_and(|k| k.mailer == "ses");
            tracing::info_span!(
                "mailer",
                otel.name = if ses { "SES.SendBulkTemplatedEmail" } else { "mail file write" },
                otel.kind = "client",
                rpc.system = if ses { "aws-api" } else { "file" },
                rpc.service = if ses { "SES" } else { "mail-dir" },
                rpc.method = if ses { "SendBulkTemplatedEmail" } else { operation },
                otel.status_code = Empty,
                otel.status_description = Empty,
                error.type = Empty,
            )
        }
        _ => tracing::info_span!(
            "backend",
            otel.name = format!("{operation} {backend}"),
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            error.type = Empty,
        ),
    }
}

/// A queue span: `send` (producer), `receive`, `process` (consumer), or another call (client).
fn queue_span(operation: &str, kind: &'static str) -> Span {
    let system = match kinds().map(|k| k.queue) {
        Some("sqs") => "aws_sqs",
        // Not a registered system: the embedded queue in the service's own SQLite file.
        _ => "sqlite_queue",
    };
    let operation_type = match operation {
        "send" => "send",
        "receive" => "receive",
        "process" => "process",
        _ => "settle",
    };
    tracing::info_span!(
        "queue",
        otel.name = format!("{operation} {QUEUE}"),
        otel.kind = kind,
        messaging.system = system,
        messaging.operation.name = operation,
        messaging.operation.type = operation_type,
        messaging.destination.name = QUEUE,
        messaging.batch.message_count = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
    )
}

/// The worker's receive and processing of one receive's messages.
pub fn queue_consume(operation: &'static str, messages: usize) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = queue_span(operation, "consumer");
    span.record("messaging.batch.message_count", messages);
    span
}

/// One cache operation (`get`, `set`, `delete`) on the order cache.
pub fn cache(operation: &'static str) -> Span {
    if !in_a_trace() {
        return Span::none();
    }
    let system = match kinds().map(|k| k.cache) {
        Some("redis") => "redis",
        _ => "in_process",
    };
    db_span(system, operation)
}

/// A database client span: the store's or the cache's.
fn db_span(system: &'static str, operation: &'static str) -> Span {
    tracing::info_span!(
        "db",
        otel.name = format!("{operation} {system}"),
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
    )
}

/// Runs one cache call in its span, marked failed when the call fails.
pub async fn cache_call<T, E: std::fmt::Display>(
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = cache(operation);
    let result = tracing::Instrument::instrument(call, span.clone()).await;
    if let Err(e) = &result {
        record_error(&span, "cache_error", e);
    }
    result
}

/// A status transition of one or more orders (the store call inside is its own span).
pub fn transition(from: &str, to: &str, orders: usize) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        "transition",
        otel.name = format!("order {from} -> {to}"),
        order.status.from = from,
        order.status.to = to,
        order.count = orders,
    )
}

/// Hashing or verifying a password: the CPU a slow login spent.
pub fn password(operation: &'static str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        "password",
        otel.name = format!("password {operation}"),
        password.algorithm = "argon2id"
    )
}

/// Marks a span failed. A refusal the caller expects (a duplicate key) is an answer, not an
/// error, exactly as in the metrics.
pub fn record_result<T>(span: &Span, result: &Result<T, BackendError>) {
    if let Err(e) = result {
        if e.is_fault() {
            let kind = match e {
                BackendError::Unavailable { .. } => "unavailable",
                BackendError::Duplicate => "duplicate",
                BackendError::Other { .. } => "backend_error",
            };
            record_error(span, kind, e);
        }
    }
}

/// Sets the error status: the conventions' `error.type` and a description.
pub fn record_error(span: &Span, kind: &'static str, description: &dyn std::fmt::Display) {
    if span.is_none() {
        return;
    }
    span.record("otel.status_code", "error");
    span.record("otel.status_description", description.to_string());
    span.record("error.type", kind);
}
