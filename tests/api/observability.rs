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

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};
use serial_test::serial;

const BIN: &str = env!("CARGO_BIN_EXE_order-service");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const LISTEN_PREFIX: &str = "order-service listening on http://127.0.0.1:";

const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const ORDER_DEADLINE: Duration = Duration::from_secs(10);
/// How long panel queries may keep coming back empty while traffic flows (series that appear
/// late, such as `queue_depth`, which the worker reports every 5 s).
const DATA_DEADLINE: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Grafana's variables as the dashboards use them, with values that suit a Prometheus scraping
/// every second: `$__rate_interval` spans many scrapes, `$__range` the whole test.
const GRAFANA_VARIABLES: [(&str, &str); 5] = [
    ("$__rate_interval", "30s"),
    ("$__interval", "5s"),
    ("$__range", "1m"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
];
const INSTANCE_FILTER: &str = r#"instance=~"$instance""#;
const DATASOURCE_UID: &str = "prometheus";

/// Metrics a healthy run never creates: the service registers a counter on its first increment,
/// and these count failures. Panels that show them fall back to 0 (`or vector(0)` / `or … * 0`),
/// so they still return data; the test only checks their names exist in `src/metrics.rs`.
const ONLY_ON_FAILURE: [&str; 7] = [
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
const ONLY_ON_REAL_BACKENDS: [&str; 1] = ["sqs_requests_total"];
/// Series Prometheus itself makes for every target.
const PROMETHEUS_METRICS: [&str; 1] = ["up"];

const SEED_USER: (&str, &str) = ("user@example.com", "user123");
const SEED_ADMIN: (&str, &str) = ("admin@example.com", "admin123");

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
    let work = TempDir::new("observability");
    let server = Server::start(&work.path.join("data"));
    let prometheus = Prometheus::start(&tools, &work.path, server.port, repo);
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

// =============================================================================================
// Tools and processes
// =============================================================================================

struct PrometheusTools {
    prometheus: PathBuf,
    promtool: PathBuf,
}

impl PrometheusTools {
    /// Both binaries from PATH; `None` (after printing why) when the test should be skipped.
    fn find() -> Option<PrometheusTools> {
        match (which("prometheus"), which("promtool")) {
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
    fn promtool(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
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

fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// "SUCCESS: 10 rules found" → 10.
fn rules_found(promtool_output: &str) -> Option<usize> {
    promtool_output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("SUCCESS: ")?;
        rest.strip_suffix(" rules found")?.parse().ok()
    })
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// A random alphanumeric secret from std only (the hasher's keys are random per process).
fn random_secret(len: usize) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|i| {
            let mut h = RandomState::new().build_hasher();
            h.write_usize(i);
            ALPHABET[(h.finish() % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir()
            .join("order-service-tests")
            .join(unique(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

type Output = Arc<Mutex<String>>;

/// Copies a child's stream into `out` line by line, on its own thread so the child never blocks
/// on a full pipe; reports the first line starting with `watch_for` through `found`.
fn drain<R: Read + Send + 'static>(
    stream: R,
    label: &'static str,
    out: Output,
    watch_for: Option<(&'static str, mpsc::Sender<String>)>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end();
            out.lock().unwrap().push_str(&format!("[{label}] {line}\n"));
            if let Some((prefix, tx)) = &watch_for {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let _ = tx.send(rest.to_string());
                }
            }
            buf.clear();
        }
    });
}

/// A child process killed when the test ends, however it ends.
struct Guarded {
    child: Child,
    output: Output,
}

impl Guarded {
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Server {
    process: Guarded,
    port: u16,
    base: String,
}

impl Server {
    /// `order-service serve` (API and worker) on a fresh data dir, embedded backends only.
    fn start(data_dir: &Path) -> Server {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            // Inside the data dir, so a developer's `.env` in the repository can not leak in.
            .current_dir(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "MONGODB_URI",
            "REDIS_HOST",
            "AWS_SQS_QUEUE_URL",
            "AWS_SES_SENDER_EMAIL",
            "MAIL_DIR",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("NODE_ENV", "development")
            .env("DATA_DIR", data_dir)
            .env("JWT_SECRET", random_secret(48))
            .env("JWT_REFRESH_SECRET", random_secret(48))
            .env("RUST_LOG", "info")
            // Plain log lines in the failure report.
            .env("NO_COLOR", "1");
        let mut child = cmd.spawn().expect("spawn order-service");
        let output: Output = Arc::default();
        let (tx, rx) = mpsc::channel();
        drain(
            child.stdout.take().unwrap(),
            "stdout",
            output.clone(),
            Some((LISTEN_PREFIX, tx)),
        );
        drain(child.stderr.take().unwrap(), "stderr", output.clone(), None);
        let process = Guarded { child, output };
        let port: u16 = match rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(port) => port.parse().expect("port in the listening line"),
            Err(e) => panic!(
                "order-service did not print `{LISTEN_PREFIX}<port>` within {STARTUP_DEADLINE:?} \
                 ({e}); output:\n{}",
                process.output()
            ),
        };
        Server {
            process,
            port,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn output(&self) -> String {
        self.process.output()
    }
}

struct Prometheus {
    process: Guarded,
    base: String,
    client: reqwest::Client,
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    query: String,
    health: String,
    last_error: String,
    labels: Value,
    annotations: Value,
}

impl Prometheus {
    /// Prometheus on a free port, scraping `target_port` every second and evaluating the
    /// repository's alert rules every second, with its data in `work`.
    fn start(tools: &PrometheusTools, work: &Path, target_port: u16, repo: &Path) -> Prometheus {
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

    fn output(&self) -> String {
        self.process.output()
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
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
    async fn poll<T, F, Fut>(&self, deadline: Duration, what: &str, mut check: F) -> T
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

    async fn wait_for_target_up(&self, target_port: u16) {
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

    async fn scrape_count(&self) -> Result<u64, String> {
        let result = self
            .query(r#"count_over_time(up{job="order-service-api"}[10m])"#)
            .await?;
        first_value(&result)
            .map(|v| v as u64)
            .ok_or_else(|| format!("no scrapes yet: {result}"))
    }

    /// Waits until `n` more scrapes have been stored than now.
    async fn wait_for_scrapes(&self, n: u64) {
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
    async fn query(&self, expr: &str) -> Result<Value, String> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"].clone())
    }

    async fn metric_names(&self) -> BTreeSet<String> {
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
    async fn wait_for_rules_evaluated(&self, expected: usize) -> Vec<Rule> {
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

fn free_port() -> u16 {
    // The port is free when we look; Prometheus binds it a moment later. Nothing else on this
    // machine picks ports from the ephemeral range for listening, so the race is theoretical.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// True when a query result holds at least one sample that is a number (a histogram quantile
/// over no observations is NaN: the panel would draw nothing).
fn has_data(result: &Value) -> bool {
    result.as_array().is_some_and(|series| {
        series.iter().any(|s| {
            s["value"][1]
                .as_str()
                .is_some_and(|v| v.parse::<f64>().is_ok_and(|v| !v.is_nan()))
        })
    })
}

fn first_value(result: &Value) -> Option<f64> {
    result.as_array()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

// =============================================================================================
// Traffic
// =============================================================================================

#[derive(Clone)]
struct Api {
    base: String,
    client: reqwest::Client,
}

/// What the burst left behind for the steady traffic, and whether a cancellation happened.
#[derive(Clone, Debug)]
struct Fed {
    user_token: String,
    order_id: String,
    product_id: String,
    cancelled: bool,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            client: http_client(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let res = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        status: u16,
    ) -> Value {
        let (got, json) = self.call(method.clone(), path, token, body).await;
        assert_eq!(got, status, "{method} {path} answered {got}: {json}");
        json
    }

    async fn text(&self, path: &str) -> String {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        res.text().await.expect("read body")
    }

    async fn login(&self, (email, password): (&str, &str)) -> Value {
        let body = json!({"email": email, "password": password});
        self.expect(Method::POST, "/api/auth/login", None, Some(&body), 200)
            .await
    }

    async fn place_order(&self, token: &str, product_id: &str, quantity: i64) -> (u16, Value) {
        let body = order_body(product_id, quantity);
        self.call(Method::POST, "/api/orders", Some(token), Some(&body))
            .await
    }

    /// Polls the order (never sleeps as synchronisation) until it has `status`.
    async fn wait_for_status(&self, token: &str, id: &str, status: &str) {
        let start = Instant::now();
        loop {
            let (code, order) = self
                .call(Method::GET, &format!("/api/orders/{id}"), Some(token), None)
                .await;
            if code == 200 && order["status"] == json!(status) {
                return;
            }
            assert!(
                start.elapsed() < ORDER_DEADLINE,
                "order {id} did not become {status} within {ORDER_DEADLINE:?}; last: {code} {order}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

fn order_body(product_id: &str, quantity: i64) -> Value {
    json!({
        "items": [{"productId": product_id, "quantity": quantity}],
        "shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"},
        "paymentMethod": "credit_card",
    })
}

fn token(auth: &Value, which: &str) -> String {
    auth[which]
        .as_str()
        .unwrap_or_else(|| panic!("no {which} in {auth}"))
        .to_string()
}

/// One pass over every flow a panel shows: logins (good and bad), a registration (and a
/// duplicate), refreshes (good and reused), rejected tokens (garbage and revoked), catalogue
/// reads, a product created, orders completed, refused for stock and for an unknown product,
/// a cancellation, cached order reads and a 404.
async fn drive_traffic(api: &Api) -> Fed {
    let user = api.login(SEED_USER).await;
    let user_token = token(&user, "accessToken");
    let admin = api.login(SEED_ADMIN).await;
    let admin_token = token(&admin, "accessToken");

    // auth_logins_total{outcome="invalid_credentials"}
    let bad = json!({"email": SEED_USER.0, "password": "not-the-password"});
    api.expect(Method::POST, "/api/auth/login", None, Some(&bad), 401)
        .await;

    // Registration (password hash), then the same email again (email_taken).
    let email = format!("{}@example.com", unique("observer"));
    let reg_body = json!({"email": email, "password": "observer-password-1", "name": "Observer"});
    let reg = api
        .expect(
            Method::POST,
            "/api/auth/register",
            None,
            Some(&reg_body),
            201,
        )
        .await;
    api.expect(
        Method::POST,
        "/api/auth/register",
        None,
        Some(&reg_body),
        409,
    )
    .await;

    // A refresh that succeeds, then the spent token again: `reused`, which revokes the session,
    // so the new access token is then refused as `revoked`. Done on the throwaway user only.
    let spent = json!({"refreshToken": token(&reg, "refreshToken")});
    let renewed = api
        .expect(Method::POST, "/api/auth/refresh", None, Some(&spent), 200)
        .await;
    api.expect(Method::POST, "/api/auth/refresh", None, Some(&spent), 401)
        .await;
    let revoked = token(&renewed, "accessToken");
    api.expect(Method::GET, "/api/auth/me", Some(&revoked), None, 401)
        .await;
    // A garbage bearer token: auth_tokens_rejected_total{reason="invalid"}.
    api.expect(
        Method::GET,
        "/api/orders",
        Some("garbage.token.value"),
        None,
        401,
    )
    .await;

    api.expect(Method::GET, "/api/products?limit=100", None, None, 200)
        .await;
    let stocked = json!({"name": unique("Observability Widget"), "description": "Stocked for the observability test", "price": 1250, "stock": 100000});
    let stocked = api
        .expect(
            Method::POST,
            "/api/products",
            Some(&admin_token),
            Some(&stocked),
            201,
        )
        .await;
    let product_id = stocked["id"].as_str().expect("product id").to_string();
    let scarce = json!({"name": unique("Observability Rarity"), "description": "One in stock", "price": 99000, "stock": 1});
    let scarce = api
        .expect(
            Method::POST,
            "/api/products",
            Some(&admin_token),
            Some(&scarce),
            201,
        )
        .await;
    let scarce_id = scarce["id"].as_str().expect("product id").to_string();
    api.expect(
        Method::GET,
        &format!("/api/products/{product_id}"),
        None,
        None,
        200,
    )
    .await;

    // Orders through the whole pipeline: queue, worker, completion, email.
    let mut order_ids = vec![];
    for _ in 0..5 {
        let (code, order) = api.place_order(&user_token, &product_id, 1).await;
        assert_eq!(code, 201, "place order: {order}");
        order_ids.push(order["id"].as_str().expect("order id").to_string());
    }
    for id in &order_ids {
        api.wait_for_status(&user_token, id, "completed").await;
    }

    // Refused at reservation: not enough stock (409), and a product that does not exist.
    let (code, body) = api.place_order(&user_token, &scarce_id, 5).await;
    assert_eq!(code, 409, "insufficient stock: {body}");
    let (code, body) = api
        .place_order(&user_token, "0123456789abcdef01234567", 1)
        .await;
    assert!(
        (400..500).contains(&code),
        "unknown product must be refused: {code} {body}"
    );

    let cancelled = cancel_one_order(api, &user_token, &product_id).await;

    // Repeated reads of one order: the first may miss the cache, the rest hit it.
    let order_id = order_ids[0].clone();
    for _ in 0..5 {
        api.expect(
            Method::GET,
            &format!("/api/orders/{order_id}"),
            Some(&user_token),
            None,
            200,
        )
        .await;
    }
    api.expect(Method::GET, "/api/orders", Some(&user_token), None, 200)
        .await;
    api.expect(Method::GET, "/no/such/route", None, None, 404)
        .await;
    api.expect(Method::GET, "/ready", None, None, 200).await;

    Fed {
        user_token,
        order_id,
        product_id,
        cancelled,
    }
}

/// Cancels an order, which only works while it is pending. The worker is woken by the queue
/// send inside the create request, so a single order is usually processed before its 201 even
/// reaches us. A burst of orders queues up behind the batch the worker is busy with, and the
/// cancels sent the moment each order is accepted win for the orders at the back. Returns
/// whether any cancel succeeded (a 409 only means the worker won that race).
async fn cancel_one_order(api: &Api, token: &str, product_id: &str) -> bool {
    const BURST: usize = 30;
    for round in 1..=3 {
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..BURST {
            let (api, token, product_id) = (api.clone(), token.to_string(), product_id.to_string());
            racers.spawn(async move {
                let (code, order) = api.place_order(&token, &product_id, 1).await;
                assert_eq!(code, 201, "place order: {order}");
                let path = format!(
                    "/api/orders/{}/cancel",
                    order["id"].as_str().expect("order id")
                );
                let (code, body) = api
                    .call(Method::POST, &path, Some(&token), Some(&json!({})))
                    .await;
                assert!(code == 200 || code == 409, "cancel answered {code}: {body}");
                code == 200
            });
        }
        let mut won = 0;
        while let Some(outcome) = racers.join_next().await {
            won += usize::from(outcome.expect("cancel racer"));
        }
        if won > 0 {
            println!("observability: {won} of {BURST} orders cancelled in round {round}");
            return true;
        }
    }
    false
}

/// A little of everything, a few times a second, until `stop`: keeps every `rate()` window fed
/// while the test waits for scrapes and runs its queries.
async fn trickle_traffic(api: Api, fed: Fed, stop: Arc<AtomicBool>) {
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) {
        api.call(Method::GET, "/api/products", None, None).await;
        let path = format!("/api/orders/{}", fed.order_id);
        api.call(Method::GET, &path, Some(&fed.user_token), None)
            .await;
        api.call(Method::GET, "/api/orders", Some("garbage"), None)
            .await;
        api.place_order(&fed.user_token, &fed.product_id, 1).await;
        if round % 4 == 0 {
            // Answers are not checked here: the burst already asserted each flow, and a login
            // throttle may rightly refuse a steady stream of logins.
            let body = json!({"email": SEED_USER.0, "password": SEED_USER.1});
            api.call(Method::POST, "/api/auth/login", None, Some(&body))
                .await;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// =============================================================================================
// Dashboards
// =============================================================================================

struct Dashboard {
    file: String,
    json: Value,
}

#[derive(Clone, Debug)]
struct PanelQuery {
    dashboard: String,
    panel: String,
    ref_id: String,
    expr: String,
}

impl PanelQuery {
    fn name(&self) -> String {
        format!("{} / {} [{}]", self.dashboard, self.panel, self.ref_id)
    }
}

fn load_dashboards(dir: &Path) -> Vec<Dashboard> {
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
fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = vec![];
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        out.extend(all_panels(&p["panels"]));
    }
    out
}

fn panel_queries_of(d: &Dashboard) -> Vec<PanelQuery> {
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

fn check_dashboard(d: &Dashboard, catalogue: &BTreeSet<String>, failures: &mut Vec<String>) {
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
fn metric_catalogue(repo: &Path) -> BTreeSet<String> {
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

/// The metric a histogram's series belong to: `x_bucket`, `x_count` and `x_sum` are all `x`.
fn base_metric(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

fn substitute_grafana_variables(expr: &str) -> String {
    let mut out = expr.to_string();
    for (var, value) in GRAFANA_VARIABLES {
        out = out.replace(var, value);
    }
    out
}

/// The vector selectors of a PromQL expression, as (metric name, label matchers inside `{}`).
///
/// A small scanner, not a parser: it skips strings, range/subquery brackets, numbers and
/// durations, and the label lists of `by`/`without`/`on`/`ignoring`/`group_*`; an identifier
/// followed by `(` is a function, an aggregation operator or keyword is skipped, and any other
/// identifier is a metric name, with the matchers that follow it if any.
fn selectors(expr: &str) -> Vec<(String, String)> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "nan", "inf"];
    let b = expr.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
        } else if c == b'[' {
            i = skip_to(b, i, b']');
        } else if c == b'{' {
            let end = skip_to(b, i, b'}');
            out.push((String::new(), expr[i + 1..end - 1].to_string()));
            i = end;
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let next = b.get(j).copied();
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if next == Some(b'(') {
                    i = skip_to(b, j, b')');
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
                || next == Some(b'(')
            {
                // An operator, a function call or an aggregation: not a metric.
            } else if next == Some(b'{') {
                let end = skip_to(b, j, b'}');
                out.push((word.to_string(), expr[j + 1..end - 1].to_string()));
                i = end;
            } else {
                out.push((word.to_string(), String::new()));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Index just past the string literal starting at `start`.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() && b[i] != quote {
        i += if b[i] == b'\\' && quote != b'`' { 2 } else { 1 };
    }
    (i + 1).min(b.len())
}

/// Index just past the `close` that ends the group opened at `start`, skipping strings inside.
fn skip_to(b: &[u8], start: usize, close: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() && b[i] != close {
        i = if matches!(b[i], b'"' | b'\'' | b'`') {
            skip_string(b, i)
        } else {
            i + 1
        };
    }
    (i + 1).min(b.len())
}

// =============================================================================================
// Rules and provisioning
// =============================================================================================

fn check_rules(rules: &[Rule], dashboards: &[Dashboard], failures: &mut Vec<String>) {
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
fn check_provisioning(repo: &Path, failures: &mut Vec<String>) {
    let wanted: [(&str, &[&str]); 2] = [
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

#[test]
fn the_selector_scanner_finds_metrics_and_their_matchers() {
    let found = selectors(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route=~"/api/.*", instance=~"$instance"}[$__rate_interval])))
           / on (route) group_left(job) sum without (le) (up) or vector(0) > bool 1 offset 5m"#,
    );
    assert_eq!(
        found,
        vec![
            (
                "http_request_duration_seconds_bucket".to_string(),
                r#"route=~"/api/.*", instance=~"$instance""#.to_string()
            ),
            ("up".to_string(), String::new()),
        ]
    );
    assert_eq!(base_metric("x_seconds_bucket"), "x_seconds");
    assert_eq!(
        substitute_grafana_variables(r#"rate(x{instance=~"$instance"}[$__rate_interval])"#),
        r#"rate(x{instance=~".*"}[30s])"#
    );
}
