//! The SRE artefacts, proven against a real Prometheus scraping the real service.
//!
//! `grafana/dashboards/*.json` and `prometheus/*.yml` are only worth something if every query in
//! them works on the metrics the service really exports, with the labels it really puts on them.
//! A typo in a metric or label name does not fail anywhere else: the panel just shows "No data"
//! on the day it is needed. So this test:
//!
//! 1. runs `promtool` on the scrape config and the alert rules;
//! 2. checks the dashboards' structure (datasource, `instance` variable, every selector filtered
//!    on `instance=~"$instance"`, units, descriptions, metric names known to `src/metrics.rs`);
//! 3. starts `order-service serve` and a Prometheus scraping it every second with the repo's
//!    alert rules loaded, and drives traffic that feeds every panel;
//! 4. runs every panel query (Grafana variables substituted) and asserts it returns data, runs
//!    every alert query, and asserts every rule evaluates with `health: ok`.
//!
//! Failures are collected and reported together, so one run shows every broken query.
//!
//! Needs the `prometheus` and `promtool` binaries (Debian: `apt-get install prometheus`). Without
//! them the test prints SKIPPED and passes, unless `REQUIRE_BACKENDS=1` (CI), where it fails.

mod dashboards;
mod fresh;
mod prometheus;
mod promql;
mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serial_test::serial;

use crate::harness::{ServerEnv, TestServer};
use dashboards::*;
use prometheus::*;
use promql::{base_metric, selectors, substitute_grafana_variables};
use traffic::*;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
pub const ORDER_DEADLINE: Duration = Duration::from_secs(10);
/// How long panel queries may keep coming back empty while traffic flows (series that appear
/// late, such as `queue_depth`, which the worker reports every 5 s).
pub const DATA_DEADLINE: Duration = Duration::from_secs(20);
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// Grafana's variables as the dashboards use them, with values that suit a Prometheus scraping
/// every second: `$__rate_interval` spans many scrapes, `$__range` the whole test.
pub const GRAFANA_VARIABLES: [(&str, &str); 5] = [
    ("$__rate_interval", "30s"),
    ("$__interval", "5s"),
    ("$__range", "1m"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
];
pub const INSTANCE_FILTER: &str = r#"instance=~"$instance""#;
pub const DATASOURCE_UID: &str = "prometheus";

/// Metrics a healthy run never creates: the service registers a counter on its first increment,
/// and these count failures. Panels that show them fall back to 0 (`or vector(0)` / `or … * 0`),
/// so they still return data; the test only checks their names exist in `src/metrics.rs`.
pub const ONLY_ON_FAILURE: [&str; 7] = [
    "orders_failed_total",
    "queue_messages_dead_lettered_total",
    "emails_failed_total",
    "backend_errors_total",
    "cache_errors_total",
    "actor_restarts_total",
    "outbox_resent_total",
];
/// Metrics only a real backend this run does not use creates (it runs on the embedded ones).
/// Their panels fall back to 0 the same way.
pub const ONLY_ON_REAL_BACKENDS: [&str; 3] = [
    "sqs_requests_total",
    "ses_requests_total",
    "mongodb_commands_total",
];
/// Series Prometheus itself makes for every target.
pub const PROMETHEUS_METRICS: [&str; 1] = ["up"];

pub const SEED_USER: (&str, &str) = ("user@example.com", "user123");
pub const SEED_ADMIN: (&str, &str) = ("admin@example.com", "admin123");

#[tokio::test]
#[serial(heavy)]
async fn dashboards_and_alerts_work_against_a_real_prometheus() {
    let Some(tools) = PrometheusTools::find() else {
        return;
    };
    let repo = Path::new(REPO);
    let mut failures: Vec<String> = vec![];
    let mut notes: Vec<String> = vec![];

    // --- 1. promtool on the repository's files ----------------------------------------------
    let config_check = tools.promtool(&["check", "config", "prometheus/prometheus.yml"], None);
    assert!(
        config_check.0,
        "promtool check config prometheus/prometheus.yml failed:\n{}",
        config_check.1
    );
    let rules_check = tools.promtool(&["check", "rules", "prometheus/alerts.yml"], None);
    assert!(
        rules_check.0,
        "promtool check rules prometheus/alerts.yml failed:\n{}",
        rules_check.1
    );
    let rule_count = rules_found(&rules_check.1).unwrap_or_else(|| {
        panic!(
            "promtool did not say how many rules it found:\n{}",
            rules_check.1
        )
    });
    assert!(rule_count > 0, "prometheus/alerts.yml has no rules");
    check_provisioning(repo, &mut failures);

    // --- 2. the dashboards, statically ------------------------------------------------------
    let dashboards = load_dashboards(&repo.join("grafana/dashboards"));
    assert!(
        dashboards.len() >= 4,
        "expected at least 4 dashboards in grafana/dashboards, found {}",
        dashboards.len()
    );
    let catalogue = metric_catalogue(repo);
    let mut panel_queries: Vec<PanelQuery> = vec![];
    for d in &dashboards {
        check_dashboard(d, &catalogue, &mut failures);
        panel_queries.extend(panel_queries_of(d));
    }
    assert!(
        !panel_queries.is_empty(),
        "the dashboards have no panel queries"
    );

    // --- 3. the service and a Prometheus scraping it ----------------------------------------
    // Dropped last (declared first): the processes using it are stopped before it is removed.
    let work = work_dir("observability");
    // No refresh reuse interval: the traffic replays a spent refresh token to feed the
    // `reused` outcome, which the interval would answer with the same pair instead.
    let server = TestServer::start(
        ServerEnv::embedded(&[("NO_COLOR", "1"), ("REFRESH_REUSE_INTERVAL", "0")]),
        "serve",
    )
    .await;
    let prometheus = Prometheus::start(&tools, work.path(), server.port, repo);
    prometheus.wait_for_target_up(server.port).await;

    let api = Api::new(&server.base);
    let fed = drive_traffic(&api).await;
    if !fed.cancelled {
        notes.push(
            "no cancellation won the race against the worker, so orders_cancelled_total was \
             never created; its panels show their 0 fallback"
                .into(),
        );
    }

    // Light, steady traffic while we wait and query, so `rate()` windows keep seeing increments.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = tokio::spawn(trickle_traffic(api.clone(), fed.clone(), stop.clone()));

    // A few scrapes after the burst, so every series it created has the two samples rate() needs.
    prometheus.wait_for_scrapes(3).await;

    // --- 4. every panel query returns data ----------------------------------------------------
    let deadline = Instant::now() + DATA_DEADLINE;
    let mut empty: Vec<(PanelQuery, String)>;
    loop {
        empty = vec![];
        for q in &panel_queries {
            let expr = substitute_grafana_variables(&q.expr);
            match prometheus.query(&expr).await {
                Ok(result) if has_data(&result) => {}
                Ok(result) => empty.push((q.clone(), format!("no data: {result}"))),
                Err(e) => empty.push((q.clone(), e)),
            }
        }
        // Errors are not worth waiting for; empty results may fill as traffic flows.
        let only_waiting = empty.iter().all(|(_, why)| why.starts_with("no data"));
        if empty.is_empty() || !only_waiting || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (q, why) in &empty {
        failures.push(format!("panel {}: {}\n      {why}", q.name(), q.expr));
    }

    // Every metric the dashboards and rules name must have appeared, failure counters excepted.
    let rules = prometheus.wait_for_rules_evaluated(rule_count).await;
    let known = prometheus.metric_names().await;
    let mut referenced: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for q in &panel_queries {
        for (name, _) in selectors(&q.expr) {
            referenced.entry(name).or_default().insert(q.name());
        }
    }
    for rule in &rules {
        for (name, _) in selectors(&rule.query) {
            if !catalogue.contains(base_metric(&name)) {
                failures.push(format!(
                    "alert {}: metric {name} is not defined in src/metrics.rs",
                    rule.name
                ));
            }
            referenced
                .entry(name)
                .or_default()
                .insert(format!("alert {}", rule.name));
        }
    }
    for (name, users) in &referenced {
        if known.contains(name) {
            continue;
        }
        let base = base_metric(name);
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        if ONLY_ON_FAILURE.contains(&base)
            || ONLY_ON_REAL_BACKENDS.contains(&base)
            || (base == "orders_cancelled_total" && !fed.cancelled)
        {
            notes.push(format!(
                "{name} never appeared (it counts a failure, a race or a real backend this run \
                 did not produce); shown as 0 by: {}",
                users.join("; ")
            ));
        } else {
            failures.push(format!(
                "metric {name} never appeared in Prometheus, but is used by: {}",
                users.join("; ")
            ));
        }
    }

    // --- 5. every alert rule evaluates --------------------------------------------------------
    check_rules(&rules, &dashboards, &mut failures);
    for rule in &rules {
        if let Err(e) = prometheus.query(&rule.query).await {
            failures.push(format!("alert {}: {}\n      {e}", rule.name, rule.query));
        }
    }

    stop.store(true, Ordering::Relaxed);
    if let Err(e) = trickle.await {
        failures.push(format!("the steady traffic failed: {e}"));
    }

    // The exposition format itself, linted: reported, not enforced (the fix belongs in src/).
    let exposition = api.text("/metrics").await;
    let lint = tools.promtool(&["check", "metrics"], Some(&exposition));
    for line in lint.1.lines().filter(|l| !l.trim().is_empty()) {
        notes.push(format!("promtool check metrics: {}", line.trim()));
    }

    println!(
        "observability: {} dashboards, {} panel queries, {} alert rules checked against Prometheus",
        dashboards.len(),
        panel_queries.len(),
        rules.len()
    );
    for n in &notes {
        println!("note: {n}");
    }
    if !failures.is_empty() {
        panic!(
            "{} observability check(s) failed:\n  - {}\n\nservice output (tail):\n{}\n\nprometheus output (tail):\n{}",
            failures.len(),
            failures.join("\n  - "),
            tail(&server.output(), 40),
            tail(&prometheus.output(), 40)
        );
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
