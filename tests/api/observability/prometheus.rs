//! The Prometheus side: `prometheus` and `promtool` found and run, a Prometheus scraping the
//! service every second with the repository's alert rules, and its HTTP API.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{tail, POLL_EVERY, REPO, STARTUP_DEADLINE};
use crate::harness::support::free_port;
use crate::harness::{drain, Output};

pub struct PrometheusTools {
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

impl PrometheusTools {
    /// Both binaries from PATH; `None` (after printing why) when the test should be skipped.
    pub fn find() -> Option<PrometheusTools> {
        match (
            which::which("prometheus").ok(),
            which::which("promtool").ok(),
        ) {
            (Some(prometheus), Some(promtool)) => Some(PrometheusTools {
                prometheus,
                promtool,
            }),
            _ => {
                let missing = "prometheus not installed (apt-get install prometheus)";
                if std::env::var("REQUIRE_BACKENDS").as_deref() == Ok("1") {
                    panic!("{missing}, and REQUIRE_BACKENDS=1 requires it");
                }
                println!("SKIPPED: {missing}");
                None
            }
        }
    }

    /// Runs promtool from the repository root; returns (success, stdout + stderr).
    pub fn promtool(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut child = Command::new(&self.promtool)
            .args(args)
            .current_dir(REPO)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        if let Some(input) = stdin {
            // Dropping the handle closes promtool's stdin, so it sees the end of the input.
            let mut pipe = child.stdin.take().expect("promtool stdin");
            pipe.write_all(input.as_bytes()).expect("write to promtool");
        }
        let out = child.wait_with_output().expect("wait for promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// "SUCCESS: 10 rules found" → 10.
pub fn rules_found(promtool_output: &str) -> Option<usize> {
    promtool_output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("SUCCESS: ")?;
        rest.strip_suffix(" rules found")?.parse().ok()
    })
}

/// A directory for Prometheus's configuration and data, removed when the test ends.
pub fn work_dir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("order-service-{label}-"))
        .tempdir()
        .expect("create a directory for Prometheus")
}

/// A child process killed when the test ends, however it ends.
pub struct Guarded {
    pub child: Child,
    pub output: Output,
}

impl Guarded {
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Prometheus {
    pub process: Guarded,
    pub base: String,
    pub client: reqwest::Client,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub query: String,
    pub health: String,
    pub last_error: String,
    pub labels: Value,
    pub annotations: Value,
}

impl Prometheus {
    /// Prometheus on a free port, scraping `target_port` every second and evaluating the
    /// repository's alert rules every second, with its data in `work`.
    pub fn start(
        tools: &PrometheusTools,
        work: &Path,
        target_port: u16,
        repo: &Path,
    ) -> Prometheus {
        let rules = repo.join("prometheus/alerts.yml");
        // JSON strings are YAML strings: this quotes the path whatever it contains.
        let rules = serde_json::to_string(&rules.to_string_lossy()).unwrap();
        // The job is named as in prometheus/prometheus.yml, so rules that select on it match.
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: order-service-api\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [\"127.0.0.1:{target_port}\"]\n"
        );
        let config_path = work.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let mut child = Command::new(&tools.prometheus)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn prometheus");
        let output: Output = Arc::default();
        drain(child.stdout.take().unwrap(), "stdout", output.clone(), None);
        drain(child.stderr.take().unwrap(), "stderr", output.clone(), None);
        Prometheus {
            process: Guarded { child, output },
            base: format!("http://127.0.0.1:{port}"),
            client: http_client(),
        }
    }

    pub fn output(&self) -> String {
        self.process.output()
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| format!("GET {path}: {status}, body is not JSON: {e}"))?;
        if body["status"] != json!("success") {
            return Err(format!("GET {path}: {status} {body}"));
        }
        Ok(body["data"].clone())
    }

    /// Polls until `check` returns `Some`, or panics after `deadline` with Prometheus's output.
    pub async fn poll<T, F, Fut>(&self, deadline: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let start = Instant::now();
        loop {
            let last = match check().await {
                Ok(v) => return v,
                Err(e) => e,
            };
            if start.elapsed() >= deadline {
                panic!(
                    "timed out after {deadline:?} waiting for {what}; last seen: {last}\n\
                     prometheus output:\n{}",
                    tail(&self.output(), 40)
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    pub async fn wait_for_target_up(&self, target_port: u16) {
        let want = format!("127.0.0.1:{target_port}");
        self.poll(STARTUP_DEADLINE, "the scrape target to be up", || async {
            let data = self.get("/api/v1/targets", &[]).await?;
            let targets = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ours = targets
                .iter()
                .find(|t| t["labels"]["instance"] == json!(want))
                .ok_or_else(|| format!("no target {want} in {data}"))?;
            if ours["health"] == json!("up") {
                Ok(())
            } else {
                Err(format!("target is {ours}"))
            }
        })
        .await
    }

    pub async fn scrape_count(&self) -> Result<u64, String> {
        let result = self
            .query(r#"count_over_time(up{job="order-service-api"}[10m])"#)
            .await?;
        first_value(&result)
            .map(|v| v as u64)
            .ok_or_else(|| format!("no scrapes yet: {result}"))
    }

    /// Waits until `n` more scrapes have been stored than now.
    pub async fn wait_for_scrapes(&self, n: u64) {
        let before = self
            .poll(STARTUP_DEADLINE, "a first scrape", || self.scrape_count())
            .await;
        self.poll(
            Duration::from_secs(5 + 2 * n),
            &format!("{n} more scrapes"),
            || async {
                let now = self.scrape_count().await?;
                if now >= before + n {
                    Ok(())
                } else {
                    Err(format!("{} scrapes since the burst", now - before))
                }
            },
        )
        .await
    }

    /// Runs an instant query; its `result`, or why it failed.
    pub async fn query(&self, expr: &str) -> Result<Value, String> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"].clone())
    }

    pub async fn metric_names(&self) -> BTreeSet<String> {
        let data = self
            .get("/api/v1/label/__name__/values", &[])
            .await
            .unwrap_or_else(|e| panic!("list metric names: {e}"));
        data.as_array()
            .unwrap_or(&vec![])
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// The loaded rules once each has been evaluated at least once (health is `unknown` before).
    pub async fn wait_for_rules_evaluated(&self, expected: usize) -> Vec<Rule> {
        self.poll(
            Duration::from_secs(15),
            "every alert rule to be evaluated",
            || async {
                let data = self.get("/api/v1/rules", &[]).await?;
                let rules: Vec<Rule> = data["groups"]
                    .as_array()
                    .unwrap_or(&vec![])
                    .iter()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .map(|r| Rule {
                        name: r["name"].as_str().unwrap_or_default().to_string(),
                        query: r["query"].as_str().unwrap_or_default().to_string(),
                        health: r["health"].as_str().unwrap_or_default().to_string(),
                        last_error: r["lastError"].as_str().unwrap_or_default().to_string(),
                        labels: r["labels"].clone(),
                        annotations: r["annotations"].clone(),
                    })
                    .collect();
                if rules.len() != expected {
                    return Err(format!(
                        "{} rules loaded, promtool found {expected}",
                        rules.len()
                    ));
                }
                match rules.iter().find(|r| r.health == "unknown") {
                    Some(r) => Err(format!("{} not evaluated yet", r.name)),
                    None => Ok(rules),
                }
            },
        )
        .await
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// True when a query result holds at least one sample that is a number (a histogram quantile
/// over no observations is NaN: the panel would draw nothing).
pub fn has_data(result: &Value) -> bool {
    result.as_array().is_some_and(|series| {
        series.iter().any(|s| {
            s["value"][1]
                .as_str()
                .is_some_and(|v| v.parse::<f64>().is_ok_and(|v| !v.is_nan()))
        })
    })
}

pub fn first_value(result: &Value) -> Option<f64> {
    result.as_array()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}
