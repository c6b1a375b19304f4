//! A freshly started service, before any traffic: every panel must already show data (issue
//! 16, item 7). A counter that appears only at its first event leaves its panel on "No data",
//! and a `rate()` alert can not fire on that first increase; the service registers the label
//! sets it knows in advance at 0, and panels of series it can not know fall back to 0.

use std::path::Path;
use std::time::Instant;

use serial_test::serial;

use super::*;

#[tokio::test]
#[serial(heavy)]
async fn every_panel_has_data_on_a_freshly_started_service() {
    let Some(tools) = PrometheusTools::find() else {
        return;
    };
    let repo = Path::new(REPO);
    let queries: Vec<PanelQuery> = load_dashboards(&repo.join("grafana/dashboards"))
        .iter()
        .flat_map(panel_queries_of)
        .collect();
    let work = work_dir("observability-fresh");
    let server = TestServer::start(ServerEnv::embedded(&[("NO_COLOR", "1")]), "serve").await;
    let prometheus = Prometheus::start(&tools, work.path(), server.port, repo);
    prometheus.wait_for_target_up(server.port).await;
    // No traffic but Prometheus's own scrapes; rate() needs two samples of each series.
    prometheus.wait_for_scrapes(3).await;

    let deadline = Instant::now() + DATA_DEADLINE;
    let empty = loop {
        let mut empty = vec![];
        for q in &queries {
            let expr = substitute_grafana_variables(&q.expr);
            match prometheus.query(&expr).await {
                Ok(result) if has_data(&result) => {}
                Ok(_) => empty.push(format!("{}: {}", q.name(), q.expr)),
                Err(e) => empty.push(format!("{}: {} ({e})", q.name(), q.expr)),
            }
        }
        if empty.is_empty() || Instant::now() >= deadline {
            break empty;
        }
        tokio::time::sleep(POLL_EVERY * 10).await;
    };
    assert!(
        empty.is_empty(),
        "{} of {} panel queries have no data before any traffic:\n  - {}",
        empty.len(),
        queries.len(),
        empty.join("\n  - ")
    );
}
