//! The dashboards and alert rules, read from the repository and checked for the conventions the
//! SRE team relies on (datasource, `instance` filter, units, descriptions, known metrics, links).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::prometheus::Rule;
use super::promql::{base_metric, selectors};
use super::{DATASOURCE_UID, INSTANCE_FILTER, PROMETHEUS_METRICS};

pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

#[derive(Clone, Debug)]
pub struct PanelQuery {
    pub dashboard: String,
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

impl PanelQuery {
    pub fn name(&self) -> String {
        format!("{} / {} [{}]", self.dashboard, self.panel, self.ref_id)
    }
}

pub fn load_dashboards(dir: &Path) -> Vec<Dashboard> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            Dashboard {
                file: p.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            }
        })
        .collect()
}

/// Every panel, rows' nested panels included (a collapsed row keeps its panels inside it).
pub fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = vec![];
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        out.extend(all_panels(&p["panels"]));
    }
    out
}

pub fn panel_queries_of(d: &Dashboard) -> Vec<PanelQuery> {
    let title = d.json["title"].as_str().unwrap_or(&d.file).to_string();
    all_panels(&d.json["panels"])
        .into_iter()
        .flat_map(|p| {
            let panel = p["title"].as_str().unwrap_or("?").to_string();
            let title = title.clone();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| PanelQuery {
                    dashboard: title.clone(),
                    panel: panel.clone(),
                    ref_id: t["refId"].as_str().unwrap_or("?").to_string(),
                    expr: t["expr"].as_str().unwrap_or_default().to_string(),
                })
        })
        .collect()
}

pub fn check_dashboard(d: &Dashboard, catalogue: &BTreeSet<String>, failures: &mut Vec<String>) {
    let mut fail = |what: String| failures.push(format!("{}: {what}", d.file));
    let j = &d.json;
    for key in ["uid", "title"] {
        if j[key].as_str().unwrap_or_default().is_empty() {
            fail(format!("no `{key}`"));
        }
    }
    let vars = j["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match vars.iter().find(|v| v["name"] == json!("instance")) {
        None => fail("no `instance` template variable".into()),
        Some(v) => {
            let query = v["query"]["query"].as_str().or(v["query"].as_str());
            let definition = v["definition"].as_str();
            let wanted = "label_values(build_info, instance)";
            if query != Some(wanted) && definition != Some(wanted) {
                fail(format!("`instance` variable must query {wanted}: {v}"));
            }
            if v["datasource"]["uid"] != json!(DATASOURCE_UID) {
                fail(format!(
                    "`instance` variable datasource is not uid {DATASOURCE_UID}"
                ));
            }
        }
    }

    let mut ids = BTreeSet::new();
    for p in all_panels(&j["panels"]) {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].to_string()) {
            fail(format!("panel {title}: duplicate id {}", p["id"]));
        }
        if p["gridPos"].is_null() {
            fail(format!("panel {title}: no gridPos"));
        }
        if p["type"] == json!("row") {
            continue;
        }
        if p["datasource"]["uid"] != json!(DATASOURCE_UID) {
            fail(format!(
                "panel {title}: datasource is not uid {DATASOURCE_UID}"
            ));
        }
        if p["description"].as_str().unwrap_or_default().is_empty() {
            fail(format!("panel {title}: no description"));
        }
        if p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            fail(format!("panel {title}: no unit"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            fail(format!("panel {title}: no queries"));
        }
        for t in &targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            let name = format!("panel {title} [{}]", t["refId"].as_str().unwrap_or("?"));
            if expr.trim().is_empty() {
                fail(format!("{name}: empty expr"));
                continue;
            }
            if !t["datasource"].is_null() && t["datasource"]["uid"] != json!(DATASOURCE_UID) {
                fail(format!("{name}: datasource is not uid {DATASOURCE_UID}"));
            }
            let found = selectors(expr);
            if found.is_empty() {
                fail(format!("{name}: selects no metric: {expr}"));
            }
            for (metric, matchers) in found {
                if !matchers.contains(INSTANCE_FILTER) {
                    fail(format!(
                        "{name}: selector {metric}{{{matchers}}} lacks {INSTANCE_FILTER}"
                    ));
                }
                if !catalogue.contains(base_metric(&metric)) {
                    fail(format!(
                        "{name}: metric {metric} is not defined in src/metrics.rs"
                    ));
                }
            }
        }
    }
}

/// Metric names the service defines: the string literals of `src/metrics.rs` (where every
/// metric name lives), and the series Prometheus adds itself.
pub fn metric_catalogue(repo: &Path) -> BTreeSet<String> {
    let source = std::fs::read_to_string(repo.join("src/metrics.rs")).expect("read src/metrics.rs");
    let mut names: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect();
    names.extend(PROMETHEUS_METRICS.iter().map(|s| s.to_string()));
    names
}

pub fn check_rules(rules: &[Rule], dashboards: &[Dashboard], failures: &mut Vec<String>) {
    let uids: BTreeSet<&str> = dashboards
        .iter()
        .filter_map(|d| d.json["uid"].as_str())
        .collect();
    for r in rules {
        let mut fail = |what: String| failures.push(format!("alert {}: {what}", r.name));
        if r.health != "ok" {
            fail(format!("health {} ({})", r.health, r.last_error));
        }
        if !matches!(r.labels["severity"].as_str(), Some("critical" | "warning")) {
            fail(format!(
                "labels.severity must be critical or warning, is {}",
                r.labels["severity"]
            ));
        }
        for key in ["summary", "description"] {
            if r.annotations[key].as_str().unwrap_or_default().is_empty() {
                fail(format!("no annotations.{key}"));
            }
        }
        // The description must send the on-call to a dashboard that exists.
        let description = r.annotations["description"].as_str().unwrap_or_default();
        let linked: Vec<&str> = description
            .split("/d/")
            .skip(1)
            .map(|rest| {
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                    .next()
                    .unwrap_or_default()
            })
            .collect();
        if linked.is_empty() {
            fail("description names no dashboard (/d/<uid>)".into());
        }
        for uid in linked {
            if !uids.contains(uid) {
                fail(format!("description links /d/{uid}, which is no dashboard"));
            }
        }
    }
}

/// The provisioning files are YAML, which this test can not parse without a new dependency;
/// it checks the lines the docker-compose setup depends on.
pub fn check_provisioning(repo: &Path, failures: &mut Vec<String>) {
    let wanted: [(&str, &[&str]); 4] = [
        (
            "grafana/provisioning/datasources/prometheus.yml",
            &[
                "uid: prometheus",
                "type: prometheus",
                "url: http://prometheus:9090",
            ],
        ),
        (
            "grafana/provisioning/dashboards/dashboards.yml",
            &["type: file", "path: /var/lib/grafana/dashboards"],
        ),
        (
            "grafana/provisioning/datasources/jaeger.yml",
            &["uid: jaeger", "type: jaeger", "url: http://jaeger:16686"],
        ),
        // The services export their traces to the Jaeger the data source reads.
        (
            "docker-compose.yml",
            &["jaeger:", "OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4318"],
        ),
    ];
    for (file, lines) in wanted {
        let text = std::fs::read_to_string(repo.join(file)).unwrap_or_default();
        for line in lines {
            if !text.lines().any(|l| l.trim() == *line) {
                failures.push(format!("{file}: no line `{line}`"));
            }
        }
    }
}
