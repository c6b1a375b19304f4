//! The OTLP pipeline: spans end on the request path and go into a bounded queue; the SDK's batch
//! processor sends them from a thread of its own, so an exporter that is slow or a collector
//! that is down never delays or fails a request. When the queue is full, a span is dropped, and
//! so is every span of a batch the collector did not take; both are counted in
//! `otel_spans_dropped_total` by reason.
//!
//! The SDK counts its own queue-full drops but keeps the number to itself, so [`Gate`] keeps the
//! queue bound in front of it: it counts the spans handed to the batch processor and not yet
//! given to the exporter, and drops (and counts) a span that would overfill the queue. The
//! processor's own queue is never the one that overflows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::metrics::{OTEL_SPANS_DROPPED_TOTAL, OTEL_SPANS_EXPORTED_TOTAL};

/// The OpenTelemetry default, also read by the SDK from `OTEL_BSP_MAX_QUEUE_SIZE`.
const DEFAULT_QUEUE: usize = 2048;

/// The provider exporting over OTLP/HTTP to the endpoint of the standard variables.
pub fn provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    let queue_size = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counting {
        inner: exporter,
        queued: queued.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(queue_size)
            .build(),
    )
    .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(Gate {
            inner: batch,
            queued,
            capacity: queue_size,
        })
        .with_resource(resource())
        .build())
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, the SDK's own), named
/// `order-service` unless the operator named it.
fn resource() -> Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(env!("CARGO_PKG_NAME")).build()
    }
}

/// Bounds the spans waiting for export (see the module comment).
#[derive(Debug)]
struct Gate {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanProcessor for Gate {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let admitted = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            metrics::counter!(OTEL_SPANS_DROPPED_TOTAL, "reason" => "queue_full").increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts what the exporter sent and what the collector refused or never saw.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        // Out of the queue now, sent or not: room for new spans.
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => metrics::counter!(OTEL_SPANS_EXPORTED_TOTAL).increment(spans as u64),
            Err(_) => metrics::counter!(OTEL_SPANS_DROPPED_TOTAL, "reason" => "export_failed")
                .increment(spans as u64),
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
