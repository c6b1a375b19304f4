//! `/metrics` as a target (issue 16, items 6 and 7): input must not mint series (every new label
//! value is a series Prometheus keeps), and the series known in advance exist at 0 from the
//! start, so their panels show data and `rate()` alerts see the first increase.

use std::collections::BTreeSet;

use reqwest::Method;

use crate::harness::*;

async fn metrics_text(srv: &TestServer) -> String {
    let r = srv.get("/metrics", None).await;
    r.assert_status(200);
    r.text
}

/// The series (name and labels) of `metric` in an exposition.
fn series<'a>(text: &'a str, metric: &str) -> BTreeSet<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s))
        .filter(|s| s.split(['{', ' ']).next() == Some(metric))
        .collect()
}

/// The values of `label` across the series of `metric`.
fn label_values(text: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    series(text, metric)
        .into_iter()
        .filter_map(|s| {
            let start = s.find(&needle)? + needle.len();
            Some(s[start..].split('"').next()?.to_string())
        })
        .collect()
}

#[tokio::test]
async fn made_up_methods_and_paths_do_not_mint_series() {
    let srv = TestServer::serve().await;
    // Once each of what the service serves anyway, so those series exist before the count.
    srv.get("/health", None).await;
    srv.get("/api/nothing-here", None).await;
    let before = metrics_text(&srv).await;
    let paths = [
        "/health",
        "/api/products",
        "/api/x1",
        "/nope/1/2",
        "/api/orders/abc/def",
    ];
    for i in 0..40 {
        let method = Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        for path in paths {
            srv.send(srv.request(method.clone(), &format!("{path}?n={i}")))
                .await;
        }
        srv.get(&format!("/random/path/{i}"), None).await;
    }
    let after = metrics_text(&srv).await;

    for metric in ["http_requests_total", "http_request_duration_seconds_count"] {
        let methods = label_values(&after, metric, "method");
        let allowed: BTreeSet<String> = [
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "other",
        ]
        .map(String::from)
        .into();
        assert!(
            methods.is_subset(&allowed),
            "{metric} has method labels {methods:?}"
        );
        let routes = label_values(&after, metric, "route");
        assert!(
            routes.iter().all(|r| !r.contains("MADEUP")
                && !r.contains("random")
                && !r.contains("/x1")
                && !r.contains("nope")),
            "{metric} has route labels from raw paths: {routes:?}"
        );
        // 240 requests with made-up methods and paths: a few new series (other × the routes
        // above × status classes) at most, not one per input.
        let grown = series(&after, metric).len() - series(&before, metric).len();
        assert!(
            grown <= 12,
            "{metric} grew by {grown} series: {:?}",
            series(&after, metric)
        );
    }
}

#[tokio::test]
async fn series_known_in_advance_are_exported_at_zero_before_any_traffic() {
    let srv = TestServer::serve().await;
    let text = metrics_text(&srv).await;
    let zero = |s: &str| {
        assert!(
            text.lines().any(|l| l == format!("{s} 0")),
            "`{s} 0` missing from a fresh /metrics"
        );
    };
    for outcome in ["success", "email_taken"] {
        zero(&format!(
            "auth_registrations_total{{outcome=\"{outcome}\"}}"
        ));
    }
    for outcome in ["success", "reused", "inactive", "invalid", "expired"] {
        zero(&format!(
            "auth_token_refreshes_total{{outcome=\"{outcome}\"}}"
        ));
    }
    for reason in ["expired", "invalid", "revoked"] {
        zero(&format!(
            "auth_tokens_rejected_total{{reason=\"{reason}\"}}"
        ));
    }
    for reason in ["unknown_product", "insufficient_stock"] {
        zero(&format!(
            "stock_reservation_failures_total{{reason=\"{reason}\"}}"
        ));
    }
    for (backend, operation) in [
        ("store", "insert_order"),
        ("store", "reserve_stock"),
        ("store", "find_session"),
        ("queue", "send"),
        ("mailer", "send"),
    ] {
        zero(&format!(
            "backend_errors_total{{backend=\"{backend}\",operation=\"{operation}\"}}"
        ));
    }
}
