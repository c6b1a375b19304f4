//! Every metric name in one place, with the recorder setup. Names follow Prometheus
//! conventions (base units, `_total` counters, `_seconds` histograms); labels carry route
//! templates and small fixed sets of values, never ids or emails, so cardinality stays bounded.

use std::future::Future;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::BackendError;

pub mod known_series;

pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
pub const HTTP_REQUESTS_IN_FLIGHT: &str = "http_requests_in_flight";

pub const ORDERS_CREATED_TOTAL: &str = "orders_created_total";
pub const ORDERS_COMPLETED_TOTAL: &str = "orders_completed_total";
pub const ORDERS_FAILED_TOTAL: &str = "orders_failed_total";
pub const ORDERS_CANCELLED_TOTAL: &str = "orders_cancelled_total";
pub const ORDERS_SHED_TOTAL: &str = "orders_shed_total";
pub const SQS_REQUESTS_TOTAL: &str = "sqs_requests_total";
pub const SES_REQUESTS_TOTAL: &str = "ses_requests_total";
/// Every command sent to MongoDB, by collection, command and path (`crate::round_trips`).
pub const MONGODB_COMMANDS_TOTAL: &str = "mongodb_commands_total";
/// From the order's creation to its completion, as the customer waits for it.
pub const ORDER_COMPLETION_SECONDS: &str = "order_completion_seconds";
pub const STOCK_RESERVATION_FAILURES_TOTAL: &str = "stock_reservation_failures_total";

pub const QUEUE_MESSAGES_SENT_TOTAL: &str = "queue_messages_sent_total";
pub const QUEUE_MESSAGES_RECEIVED_TOTAL: &str = "queue_messages_received_total";
pub const QUEUE_MESSAGES_DELETED_TOTAL: &str = "queue_messages_deleted_total";
pub const QUEUE_MESSAGES_DEAD_LETTERED_TOTAL: &str = "queue_messages_dead_lettered_total";
pub const QUEUE_MESSAGE_PROCESSING_SECONDS: &str = "queue_message_processing_seconds";
/// Approximate number of messages by state (`visible`, `in_flight`, `dead_letter`).
pub const QUEUE_DEPTH: &str = "queue_depth";
pub const QUEUE_BACKLOG_OBSERVED: &str = "admission_queue_backlog";
pub const OUTBOX_RESENT_TOTAL: &str = "outbox_resent_total";
/// Orders the stranded-order sweeper sent again (pending or processing past `ORDER_STUCK_AFTER`).
pub const ORDERS_STRANDED_RESENT_TOTAL: &str = "orders_stranded_resent_total";

pub const ACTOR_MAILBOX_BACKLOG: &str = "actor_mailbox_backlog";
pub const ACTOR_RESTARTS_TOTAL: &str = "actor_restarts_total";

pub const CACHE_HITS_TOTAL: &str = "cache_hits_total";
pub const CACHE_MISSES_TOTAL: &str = "cache_misses_total";
pub const CACHE_ERRORS_TOTAL: &str = "cache_errors_total";

pub const EMAILS_SENT_TOTAL: &str = "emails_sent_total";
pub const EMAILS_FAILED_TOTAL: &str = "emails_failed_total";
/// Emails sent again by the email sweeper (claimed and never marked sent): an upper bound on
/// the duplicates nobody can see (a send that went out before its sender died).
pub const EMAILS_RESENT_TOTAL: &str = "emails_resent_total";
/// Emails sent when their claim was already marked sent: duplicates that certainly went out.
pub const EMAILS_DUPLICATE_TOTAL: &str = "emails_duplicate_total";

pub const AUTH_LOGINS_TOTAL: &str = "auth_logins_total";
pub const AUTH_REGISTRATIONS_TOTAL: &str = "auth_registrations_total";
pub const AUTH_TOKEN_REFRESHES_TOTAL: &str = "auth_token_refreshes_total";
pub const AUTH_TOKENS_REJECTED_TOTAL: &str = "auth_tokens_rejected_total";
pub const PASSWORD_HASH_SECONDS: &str = "password_hash_seconds";

/// Status streams (SSE) open on this process.
pub const ORDER_EVENT_STREAMS_OPEN: &str = "order_event_streams_open";
/// Streams ended because their client fell a buffer behind (it resumes with `Last-Event-ID`).
pub const ORDER_EVENT_SUBSCRIBERS_DROPPED_TOTAL: &str = "order_event_subscribers_dropped_total";
/// Status events that could not be published to Redis (listeners recover them from the store).
pub const ORDER_EVENTS_UNPUBLISHED_TOTAL: &str = "order_events_unpublished_total";

pub const BACKEND_CALL_DURATION_SECONDS: &str = "backend_call_duration_seconds";
pub const BACKEND_ERRORS_TOTAL: &str = "backend_errors_total";

pub const BUILD_INFO: &str = "build_info";

pub const OTEL_SPANS_EXPORTED_TOTAL: &str = "otel_spans_exported_total";
pub const OTEL_SPANS_DROPPED_TOTAL: &str = "otel_spans_dropped_total";

pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";

/// Installs the global recorder and returns the handle `/metrics` renders from.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let fast = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    let slow = &[
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let hashing = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_REQUEST_DURATION_SECONDS.into()), fast)?
        .set_buckets_for_metric(Matcher::Full(BACKEND_CALL_DURATION_SECONDS.into()), fast)?
        .set_buckets_for_metric(Matcher::Full(QUEUE_MESSAGE_PROCESSING_SECONDS.into()), fast)?
        .set_buckets_for_metric(Matcher::Full(ORDER_COMPLETION_SECONDS.into()), slow)?
        .set_buckets_for_metric(Matcher::Full(PASSWORD_HASH_SECONDS.into()), hashing)?
        .install_recorder()?;
    start_upkeep(handle.clone())?;
    describe();
    register_failure_counters();
    known_series::register();
    Ok(handle)
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The exporter keeps every histogram sample until upkeep folds it into the buckets; a scrape
/// does it too, but a process nobody scrapes (a benchmark, a Prometheus outage) grew by
/// megabytes a minute under load. A thread of its own, so it runs whatever the executors do.
fn start_upkeep(handle: PrometheusHandle) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        })
        .map(drop)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by method, route template and status class"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency by method and route template"
    );
    describe_gauge!(HTTP_REQUESTS_IN_FLIGHT, "HTTP requests being served");
    describe_counter!(ORDERS_CREATED_TOTAL, "Orders accepted (answered 201)");
    describe_counter!(ORDERS_COMPLETED_TOTAL, "Orders that reached completed");
    describe_counter!(ORDERS_FAILED_TOTAL, "Orders that reached failed");
    describe_counter!(ORDERS_CANCELLED_TOTAL, "Orders cancelled by their owner");
    describe_counter!(
        SQS_REQUESTS_TOTAL,
        "SQS API requests by operation (SQS bills and throttles per request)"
    );
    describe_counter!(
        SES_REQUESTS_TOTAL,
        "SES API requests by operation (SES bills and rate-limits per request)"
    );
    describe_counter!(
        MONGODB_COMMANDS_TOTAL,
        "MongoDB commands sent, by collection, command and path (request, worker, lock, other)"
    );
    describe_counter!(
        ORDERS_SHED_TOTAL,
        "Order creations refused with 503 overloaded, by reason: in_flight (MAX_ORDERS_IN_FLIGHT were already running) or backlog (MAX_QUEUE_BACKLOG orders were waiting for a worker)"
    );
    describe_histogram!(
        ORDER_COMPLETION_SECONDS,
        Unit::Seconds,
        "Time from order creation to completion"
    );
    describe_counter!(
        STOCK_RESERVATION_FAILURES_TOTAL,
        "Orders refused at reservation, by reason"
    );
    describe_counter!(
        QUEUE_MESSAGES_SENT_TOTAL,
        "Messages sent to the order queue"
    );
    describe_counter!(
        QUEUE_MESSAGES_RECEIVED_TOTAL,
        "Messages received from the order queue"
    );
    describe_counter!(
        QUEUE_MESSAGES_DELETED_TOTAL,
        "Messages deleted after processing"
    );
    describe_counter!(
        QUEUE_MESSAGES_DEAD_LETTERED_TOTAL,
        "Messages seen on their last allowed receive (headed for the dead-letter queue)"
    );
    describe_histogram!(
        QUEUE_MESSAGE_PROCESSING_SECONDS,
        Unit::Seconds,
        "Time to process one queue message"
    );
    describe_gauge!(QUEUE_DEPTH, "Approximate messages in the queue by state");
    describe_gauge!(
        QUEUE_BACKLOG_OBSERVED,
        "Messages waiting in the queue as this process's admission last saw them (MAX_QUEUE_BACKLOG)"
    );
    describe_counter!(
        OUTBOX_RESENT_TOTAL,
        "Orders whose queue message was re-sent by the outbox reconciler"
    );
    describe_counter!(
        ORDERS_STRANDED_RESENT_TOTAL,
        "Orders pending or processing past ORDER_STUCK_AFTER, sent again by the sweeper"
    );
    describe_gauge!(
        ACTOR_MAILBOX_BACKLOG,
        "Messages sent to an actor and not yet answered"
    );
    describe_counter!(ACTOR_RESTARTS_TOTAL, "Actor restarts by the supervisor");
    describe_counter!(CACHE_HITS_TOTAL, "Cache hits by cache");
    describe_counter!(CACHE_MISSES_TOTAL, "Cache misses by cache");
    describe_counter!(CACHE_ERRORS_TOTAL, "Cache calls that failed, by operation");
    describe_counter!(EMAILS_SENT_TOTAL, "Emails sent, by kind");
    describe_counter!(
        EMAILS_FAILED_TOTAL,
        "Emails that could not be sent, by kind"
    );
    describe_counter!(
        EMAILS_RESENT_TOTAL,
        "Emails claimed and never marked sent, sent again by the email sweeper, by kind"
    );
    describe_counter!(
        EMAILS_DUPLICATE_TOTAL,
        "Emails sent although already marked sent (certain duplicates), by kind"
    );
    describe_counter!(AUTH_LOGINS_TOTAL, "Login attempts by outcome");
    describe_counter!(AUTH_REGISTRATIONS_TOTAL, "Registrations by outcome");
    describe_counter!(AUTH_TOKEN_REFRESHES_TOTAL, "Token refreshes by outcome");
    describe_counter!(
        AUTH_TOKENS_REJECTED_TOTAL,
        "Bearer tokens rejected, by reason"
    );
    describe_histogram!(
        PASSWORD_HASH_SECONDS,
        Unit::Seconds,
        "Time to hash or verify one password"
    );
    describe_gauge!(
        ORDER_EVENT_STREAMS_OPEN,
        "Order status streams (server-sent events) open"
    );
    describe_counter!(
        ORDER_EVENT_SUBSCRIBERS_DROPPED_TOTAL,
        "Status streams ended because their client fell behind"
    );
    describe_counter!(
        ORDER_EVENTS_UNPUBLISHED_TOTAL,
        "Status events not published to Redis (recovered from the store by listeners)"
    );
    describe_histogram!(
        BACKEND_CALL_DURATION_SECONDS,
        Unit::Seconds,
        "Backend call latency by backend and operation"
    );
    describe_counter!(
        BACKEND_ERRORS_TOTAL,
        "Backend calls that failed, by backend and operation"
    );
    describe_counter!(
        OTEL_SPANS_EXPORTED_TOTAL,
        "Spans the OTLP collector accepted (only while tracing is on)"
    );
    describe_counter!(
        OTEL_SPANS_DROPPED_TOTAL,
        "Spans never exported, by reason: queue_full or export_failed"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; labels carry the version and the backend kinds"
    );
}

/// Times one backend call, bounds it by `BACKEND_TIMEOUT`, counts its failure, and traces it
/// as a span of its own.
pub async fn backend_call<T, F>(
    backend: &'static str,
    operation: &'static str,
    call: F,
) -> Result<T, BackendError>
where
    F: Future<Output = Result<T, BackendError>>,
{
    let started = Instant::now();
    let span = crate::telemetry::spans::backend(backend, operation);
    let bound = crate::deadline::backend_timeout();
    let bounded = crate::deadline::within(backend, bound, call);
    let result = tracing::Instrument::instrument(bounded, span.clone()).await;
    crate::telemetry::spans::record_result(&span, &result);
    metrics::histogram!(BACKEND_CALL_DURATION_SECONDS, "backend" => backend, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    // A refusal the caller expects (a duplicate key) is an answer, not a fault of the backend.
    if result.as_ref().is_err_and(|e| e.is_fault()) {
        metrics::counter!(BACKEND_ERRORS_TOTAL, "backend" => backend, "operation" => operation)
            .increment(1);
    }
    result
}

/// Process CPU, memory and open files, read from `/proc` at scrape time (Linux only; on other
/// systems these series are simply absent).
pub fn record_process_metrics() {
    #[cfg(target_os = "linux")]
    {
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may contain spaces) are space separated;
            // utime and stime are fields 14 and 15 of the whole line (11 and 12 here), in ticks
            // of USER_HZ, which is 100 on every mainstream Linux architecture.
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| {
                    fields
                        .get(i)
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                // A gauge, because `metrics` counters are integers and CPU time is fractional;
                // `rate()` works on it all the same, as it only ever grows.
                metrics::gauge!(PROCESS_CPU_SECONDS_TOTAL).set((ticks(11) + ticks(12)) / 100.0);
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            // In kB whatever the page size, unlike the page counts of /proc/self/stat.
            let kib = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            };
            if let Some(rss) = kib("VmRSS:") {
                metrics::gauge!(PROCESS_RESIDENT_MEMORY_BYTES).set(rss * 1024.0);
            }
            if let Some(vsize) = kib("VmSize:") {
                metrics::gauge!(PROCESS_VIRTUAL_MEMORY_BYTES).set(vsize * 1024.0);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            metrics::gauge!(PROCESS_OPEN_FDS).set(dir.count() as f64);
        }
    }
}

/// Creates the failure counters at zero at start: a counter born at its first increment makes
/// that first failure invisible to `rate()` and `increase()`, so alerts would miss it.
fn register_failure_counters() {
    // Emails go out for terminal statuses only.
    for kind in crate::domain::OrderStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
    {
        metrics::counter!(EMAILS_FAILED_TOTAL, "kind" => kind.as_str()).increment(0);
        metrics::counter!(EMAILS_SENT_TOTAL, "kind" => kind.as_str()).increment(0);
    }
    for actor in ["auth", "inventory", "order", "mailer", "sqs_poller"] {
        metrics::counter!(ACTOR_RESTARTS_TOTAL, "actor" => actor).increment(0);
    }
    for cache in ["order", "session", "login_throttle"] {
        for operation in ["get", "set", "delete", "increment"] {
            metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => cache, "operation" => operation)
                .increment(0);
        }
    }
    for shed in crate::actors::admission::Shed::ALL {
        metrics::counter!(ORDERS_SHED_TOTAL, "reason" => shed.as_str()).increment(0);
    }
    for counter in [
        ORDERS_CREATED_TOTAL,
        ORDERS_COMPLETED_TOTAL,
        ORDERS_FAILED_TOTAL,
        ORDERS_CANCELLED_TOTAL,
        QUEUE_MESSAGES_SENT_TOTAL,
        QUEUE_MESSAGES_RECEIVED_TOTAL,
        QUEUE_MESSAGES_DELETED_TOTAL,
        QUEUE_MESSAGES_DEAD_LETTERED_TOTAL,
        OUTBOX_RESENT_TOTAL,
        ORDERS_STRANDED_RESENT_TOTAL,
    ] {
        metrics::counter!(counter).increment(0);
    }
    for reason in ["queue_full", "export_failed"] {
        metrics::counter!(OTEL_SPANS_DROPPED_TOTAL, "reason" => reason).increment(0);
    }
}
