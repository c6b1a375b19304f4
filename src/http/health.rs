//! Liveness, readiness and metrics: what load balancers and Prometheus ask.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{http::header, web, HttpResponse};
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::ApiState;
use crate::queue::redrive::ConfigWarning;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Backends the service takes traffic without: orders are read from the store when the cache
/// is away, and emails wait for the mailer (their claims are sent later). Reported, never a
/// reason to take the process out of a load balancer.
const OPTIONAL: [&str; 2] = ["cache", "mailer"];
/// When a client told "not ready" should ask again (`Retry-After`): backends that went away are
/// reconnected on the next call, so a few seconds is the usual wait.
const NOT_READY_RETRY_AFTER_SECS: u64 = 5;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Each configured backend and whether it answered (`ok`, or why not).
    pub checks: BTreeMap<&'static str, String>,
    /// The optional backends (cache, mailer) that did not answer: the service serves without
    /// them, degraded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<&'static str>,
    /// Misconfigurations that do not stop the process taking traffic but need an operator, each
    /// with a stable `code` (`queue_redrive_before_last_attempt`: the SQS redrive policy's
    /// `maxReceiveCount` is below `QUEUE_MAX_RECEIVES`, so orders can strand).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<ConfigWarning>,
}

#[utoipa::path(get, path = "/health", tag = "operations", operation_id = "health",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/ready", tag = "operations", operation_id = "ready",
    responses(
        (status = 200, description = "The process can take traffic: the database and the queue answer (the cache \
            and the mailer are reported in `checks`; those not answering are listed in `degraded`; misconfigurations \
            such as a redrive policy that dead-letters before the last attempt are listed in `warnings`)", body = Readiness),
        (status = 503, description = "The database or the queue does not answer (`not_ready`): `unavailable` names \
            them, `checks` has every backend's state",
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again"))),
    ))]
pub async fn ready(state: web::Data<ApiState>) -> HttpResponse {
    // Every backend at once, so a slow one costs its own timeout, not the sum of them.
    let probes = state.readiness.probes().into_iter();
    let (checks, warnings) = futures_util::future::join(
        join_all(probes.map(|(name, ping)| async move { (name, check(ping).await) })),
        // Cached once known; bounded like a probe while the queue has not answered yet.
        tokio::time::timeout(CHECK_TIMEOUT, state.readiness.warnings()),
    )
    .await;
    let checks: BTreeMap<&'static str, String> = checks.into_iter().collect();
    let warnings = warnings.unwrap_or_default();
    let (degraded, failing): (Vec<&'static str>, Vec<&'static str>) = checks
        .iter()
        .filter(|(_, v)| v.as_str() != "ok")
        .map(|(k, _)| *k)
        .partition(|k| OPTIONAL.contains(k));
    if failing.is_empty() {
        if !degraded.is_empty() {
            tracing::warn!(?degraded, "ready without optional backends");
        }
        HttpResponse::Ok().json(Readiness {
            status: "ready",
            checks,
            degraded,
            warnings,
        })
    } else {
        tracing::warn!(?failing, "not ready");
        HttpResponse::ServiceUnavailable()
            .content_type("application/problem+json")
            .insert_header((header::RETRY_AFTER, NOT_READY_RETRY_AFTER_SECS.to_string()))
            .json(json!({
                "type": "urn:order-service:problem:not_ready",
                "title": "Not ready",
                "status": 503,
                "detail": format!("not answering: {}", failing.join(", ")),
                "code": "not_ready",
                "instance": "/ready",
                "unavailable": failing,
                "checks": checks,
                "warnings": warnings,
            }))
    }
}

async fn check<F>(ping: F) -> String
where
    F: std::future::Future<Output = Result<(), crate::error::BackendError>>,
{
    match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
        Ok(Ok(())) => "ok".into(),
        // The kind of failure only: backend errors may carry addresses we do not publish.
        Ok(Err(crate::error::BackendError::Unavailable { .. })) => "unavailable".into(),
        Ok(Err(_)) => "error".into(),
        Err(_) => "timeout".into(),
    }
}

pub async fn metrics(
    handle: web::Data<metrics_exporter_prometheus::PrometheusHandle>,
) -> HttpResponse {
    crate::metrics::record_process_metrics();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}
