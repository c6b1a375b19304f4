//! Logging and tracing. Logs: `tracing` to stdout, human-readable by default, one JSON object per
//! line with `LOG_FORMAT=json` (with `trace_id`/`span_id` inside traced spans). `RUST_LOG`
//! filters them (default `info`), not the traces. Traces: when an OTLP endpoint is set, the
//! same spans go out over OTLP/HTTP (see [`export`]); otherwise nothing of OpenTelemetry runs.

mod export;
pub mod http;
mod log_ids;
pub mod propagation;
pub mod settings;
pub mod spans;
pub mod worker;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, fmt, EnvFilter, Layer};

use crate::config::LogFormat;
use settings::TraceExport;

/// Flushes the spans still queued when dropped at exit.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("order-service: flushing traces at exit: {e}");
            }
        }
    }
}

pub fn init(format: LogFormat, trace_export: Option<&TraceExport>) -> Guard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    // Colours only for a person at a terminal: escape codes in a log file or pipe are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(false)
            .event_format(log_ids::WithTraceIds(
                fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_target(false),
            ))
            .boxed(),
        LogFormat::Text => fmt::layer().with_target(false).with_ansi(ansi).boxed(),
    };
    let (provider, problem) = match trace_export.map(|_| export::provider()) {
        None => (None, None),
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let traces = provider.as_ref().map(|p| {
        spans::enable();
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(env!("CARGO_PKG_NAME")))
            // Status comes from the spans' own `otel.status_code`, not from every error log line.
            .with_error_events_to_status(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            // No OpenTelemetry context attached at every poll of an entered span, and no busy/idle
            // timings per span: the service reads the context only where it crosses a hop
            // (`propagation`), and Jaeger shows durations. Both cost time on every poll of every
            // traced future.
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            // Only this crate's spans: the libraries' own (HTTP clients, drivers) would double the
            // backend spans, and the exporter's HTTP client must never trace its own requests.
            .with_filter(filter::filter_fn(|meta| {
                meta.target().starts_with(env!("CARGO_CRATE_NAME"))
                    && *meta.level() <= tracing::Level::INFO
            }))
    });
    // `RUST_LOG` filters the logs only: `RUST_LOG=warn` must not switch the traces off.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init();
    match (trace_export, &problem) {
        (Some(export), None) => {
            tracing::info!(endpoint = %export.endpoint, "exporting traces over OTLP/HTTP")
        }
        (Some(_), Some(e)) => {
            tracing::error!(error = %format!("{e:#}"), "trace export could not start; tracing is off")
        }
        _ => {}
    }
    Guard(provider)
}
