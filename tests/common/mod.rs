//! Black-box harness: every test spawns the real `order-service` binary on a random port with its
//! own fresh data directory and talks to it over HTTP only. Nothing here links to the service's
//! code, so the same suite runs against the embedded backends or, with `TEST_BACKENDS=real`, against
//! real FerretDB, redis-server and moto servers (see `RealBackends`).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_order-service");
pub const LISTEN_PREFIX: &str = "order-service listening on http://127.0.0.1:";
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
pub const ORDER_DEADLINE: Duration = Duration::from_secs(10);
pub const POLL_EVERY: Duration = Duration::from_millis(30);

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin123";
pub const SEED_USER_EMAIL: &str = "user@example.com";
pub const SEED_USER_PASSWORD: &str = "user123";

/// Variables that point the service at real backends. They are removed from the inherited
/// environment unless `RealBackends::env` sets them on purpose.
const BACKEND_VARS: [&str; 4] = [
    "MONGODB_URI",
    "REDIS_HOST",
    "AWS_SQS_QUEUE_URL",
    "AWS_SES_SENDER_EMAIL",
];
/// Variables the harness owns or that change the service's defaults: never inherited from the
/// developer's shell, so the suite tests the documented defaults.
const OWNED_VARS: [&str; 20] = [
    "DATA_DIR",
    "MAIL_DIR",
    "PORT",
    "HOST",
    "NODE_ENV",
    "APP_ENV",
    "JWT_SECRET",
    "JWT_REFRESH_SECRET",
    "JWT_EXPIRATION",
    "JWT_REFRESH_EXPIRATION",
    "RUST_LOG",
    "LOG_FORMAT",
    "BODY_LIMIT_BYTES",
    "METRICS_PORT",
    "QUEUE_VISIBILITY_TIMEOUT",
    "QUEUE_WAIT_TIME",
    "SHUTDOWN_TIMEOUT",
    "WORKER_CONCURRENCY",
    "REDIS_PORT",
    "REDIS_CACHE_EXPIRATION",
];

#[path = "../support/mod.rs"]
pub mod support;

/// True when the suite runs against the real backends: `TEST_BACKENDS=real` (set by
/// `scripts/test` for its second pass). Every server environment then gets its own FerretDB,
/// redis-server and moto (SQS and SES), so the same tests prove both backend sets.
pub fn real_backends() -> bool {
    std::env::var("TEST_BACKENDS").is_ok_and(|v| v == "real")
}

/// The SES sender the real-backend environments verify and configure.
pub const SES_SENDER: &str = "orders@example.com";
/// Receives before SQS dead-letters a message; the service is told the same.
pub const MAX_RECEIVES: u32 = 5;

/// One set of real backend servers, private to a server environment (and its restarts).
pub struct RealBackends {
    pub ferretdb: support::ferretdb::FerretDb,
    pub redis: support::redis::RedisServer,
    pub moto: support::moto::Moto,
    pub database: String,
    pub queue_url: String,
}

impl std::fmt::Debug for RealBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealBackends")
            .field("ferretdb_port", &self.ferretdb.port)
            .field("redis_port", &self.redis.port)
            .field("moto_port", &self.moto.port)
            .field("database", &self.database)
            .finish()
    }
}

impl RealBackends {
    /// Starts the three servers, creates the queue with its dead-letter queue and verifies the
    /// sender. Runs its async setup on a private runtime thread, so it can be called anywhere.
    pub fn start() -> RealBackends {
        std::thread::spawn(|| {
            let missing =
                "TEST_BACKENDS=real needs FerretDB, redis-server and moto (run scripts/test)";
            let ferretdb = support::ferretdb::start().expect(missing);
            let redis = support::redis::start().expect(missing);
            let moto = support::moto::start().expect(missing);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (queue_url, _dlq) = runtime.block_on(async {
                moto.verify_sender(SES_SENDER).await;
                moto.create_queue("orders", MAX_RECEIVES).await
            });
            RealBackends {
                ferretdb,
                redis,
                moto,
                database: unique("orders"),
                queue_url,
            }
        })
        .join()
        .expect("start the real backends")
    }

    /// The service's environment for these servers, with the `.env` names of the old service.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("MONGODB_URI".to_string(), self.ferretdb.uri(&self.database)),
            ("REDIS_HOST".to_string(), self.redis.host().to_string()),
            ("REDIS_PORT".to_string(), self.redis.port().to_string()),
            ("AWS_SQS_QUEUE_URL".to_string(), self.queue_url.clone()),
            ("AWS_SES_SENDER_EMAIL".to_string(), SES_SENDER.to_string()),
            ("QUEUE_MAX_RECEIVES".to_string(), MAX_RECEIVES.to_string()),
        ];
        env.extend(self.moto.env());
        env
    }
}

// ---------------------------------------------------------------------------------------------
// Unique names and randomness (std only)
// ---------------------------------------------------------------------------------------------

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A string unique within this machine for the life of the test run.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}-{}", std::process::id(), nanos())
}

fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(nanos());
    h.write_u64(COUNTER.fetch_add(1, Ordering::SeqCst));
    h.finish()
}

/// A random alphanumeric string (used for the JWT secrets).
pub fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut r = random_u64();
        for _ in 0..8 {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(r % ALPHABET.len() as u64) as usize] as char);
            r /= ALPHABET.len() as u64;
        }
    }
    out
}

pub fn unique_email() -> String {
    format!("{}@example.com", unique("user"))
}

/// A fresh, empty data directory unique to this test.
pub fn fresh_data_dir() -> PathBuf {
    let dir = std::env::temp_dir()
        .join("order-service-tests")
        .join(unique("data"));
    std::fs::create_dir_all(&dir).expect("create test data dir");
    dir
}

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// Re-checks `check` every few tens of milliseconds until it returns `Ok`, or panics after
/// `deadline` with `what` and the last `Err` it reported (what was seen instead).
pub async fn poll_until<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() >= deadline {
                    panic!("timed out after {deadline:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Runs blocking work (process spawning, waiting) off the async runtime; re-raises its panic.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs borrowed futures concurrently on the current task and collects their outputs in order
/// (a dependency-free `join_all`).
pub async fn join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in futs.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

// ---------------------------------------------------------------------------------------------
// Child process
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct ServerEnv {
    pub data_dir: PathBuf,
    pub jwt_secret: String,
    pub jwt_refresh_secret: String,
    /// The real backends of this environment, when the suite runs against them.
    pub real: Option<Arc<RealBackends>>,
    /// Further variables for the processes of this environment (e.g. `METRICS_PORT=0`).
    pub extra: Vec<(String, String)>,
}

impl ServerEnv {
    pub fn fresh() -> Self {
        ServerEnv {
            data_dir: fresh_data_dir(),
            jwt_secret: random_string(48),
            jwt_refresh_secret: random_string(48),
            real: real_backends().then(|| Arc::new(RealBackends::start())),
            extra: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            // Run inside the data dir so a developer's `.env` in the repo can not leak in.
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in BACKEND_VARS.iter().chain(OWNED_VARS.iter()) {
            cmd.env_remove(var);
        }
        cmd.env("DATA_DIR", &self.data_dir)
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("NODE_ENV", "development")
            .env("JWT_SECRET", &self.jwt_secret)
            .env("JWT_REFRESH_SECRET", &self.jwt_refresh_secret)
            .env("RUST_LOG", "info");
        for (k, v) in self.real.iter().flat_map(|real| real.env()) {
            cmd.env(k, v);
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.data_dir.join("mail")
    }
}

type Output = Arc<Mutex<String>>;

fn drain<R: Read + Send + 'static>(
    stream: R,
    label: &'static str,
    out: Output,
    listening: Option<mpsc::Sender<u16>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    out.lock().unwrap().push_str(&format!("[{label}] {line}\n"));
                    if let (Some(tx), Some(rest)) = (&listening, line.strip_prefix(LISTEN_PREFIX)) {
                        if let Ok(port) = rest.parse::<u16>() {
                            let _ = tx.send(port);
                        }
                    }
                }
            }
        }
    })
}

/// Runs a one-shot CLI subcommand (e.g. `seed`) against `env`; panics on timeout.
pub fn run_cli(env: &ServerEnv, args: &[&str], deadline: Duration) -> (ExitStatus, String) {
    let mut child = env.command(args).spawn().expect("spawn order-service");
    let out: Output = Arc::new(Mutex::new(String::new()));
    let t1 = drain(child.stdout.take().unwrap(), "stdout", out.clone(), None);
    let t2 = drain(child.stderr.take().unwrap(), "stderr", out.clone(), None);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`order-service {}` did not finish within {deadline:?}; output:\n{}",
                args.join(" "),
                out.lock().unwrap()
            );
        }
        std::thread::sleep(POLL_EVERY);
    };
    let _ = t1.join();
    let _ = t2.join();
    let text = out.lock().unwrap().clone();
    (status, text)
}

/// Runs `order-service seed` and asserts it succeeds.
pub fn seed(env: &ServerEnv) -> String {
    let (status, out) = run_cli(env, &["seed"], Duration::from_secs(60));
    assert!(
        status.success(),
        "`order-service seed` failed with {status}; output:\n{out}"
    );
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP responses
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct Resp {
    pub method: Method,
    /// Request path without the query string.
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e})", self.ctx()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is not ASCII").to_string())
    }

    pub fn content_type(&self) -> String {
        self.header("content-type").unwrap_or_default()
    }

    /// Method, path, status and body, for assertion messages.
    pub fn ctx(&self) -> String {
        let q = self
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let body: String = self.text.chars().take(2000).collect();
        format!(
            "{} {}{q} -> {} {}",
            self.method, self.path, self.status, body
        )
    }

    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status: {}", self.ctx());
        self
    }
}

/// Asserts a success answer is `application/json`.
pub fn assert_json_ct(r: &Resp) {
    assert!(
        r.content_type().starts_with("application/json"),
        "content-type {:?}: {}",
        r.content_type(),
        r.ctx()
    );
}

/// Asserts an RFC 9457 problem response with the given status and `code`; returns the body.
pub fn assert_problem(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "unexpected status: {}", r.ctx());
    assert!(
        r.content_type().starts_with("application/problem+json"),
        "error content-type is {:?}, want application/problem+json: {}",
        r.content_type(),
        r.ctx()
    );
    let body = r.json();
    assert_eq!(body["code"], json!(code), "problem code: {}", r.ctx());
    assert_eq!(
        body["status"],
        json!(status),
        "problem status field: {}",
        r.ctx()
    );
    for field in ["type", "title", "detail"] {
        assert!(
            body[field].as_str().is_some_and(|s| !s.is_empty()),
            "problem field `{field}` must be a non-empty string: {}",
            r.ctx()
        );
    }
    let instance = body["instance"]
        .as_str()
        .unwrap_or_else(|| panic!("problem has no `instance`: {}", r.ctx()));
    let with_query = r.query.as_deref().map(|q| format!("{}?{q}", r.path));
    assert!(
        instance == r.path || Some(instance) == with_query.as_deref(),
        "problem `instance` is {instance:?}, want the request path {:?}: {}",
        r.path,
        r.ctx()
    );
    body
}

/// The `field` names of a validation problem's `errors`, each checked to have a message.
pub fn error_fields(r: &Resp, body: &Value) -> BTreeSet<String> {
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("validation problem has no `errors` array: {}", r.ctx()));
    errors
        .iter()
        .map(|e| {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "field error without message: {e} in {}",
                r.ctx()
            );
            e["field"]
                .as_str()
                .unwrap_or_else(|| panic!("field error without `field`: {e} in {}", r.ctx()))
                .to_string()
        })
        .collect()
}

/// Asserts 400 `validation_failed` naming exactly `fields`.
pub fn assert_validation(r: &Resp, fields: &[&str]) -> Value {
    let body = assert_problem(r, 400, "validation_failed");
    let got = error_fields(r, &body);
    let want: BTreeSet<String> = fields.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        got,
        want,
        "fields named by the validation problem: {}",
        r.ctx()
    );
    body
}

/// Asserts `value` is a 24-hex id string.
pub fn assert_id(value: &Value, what: &str) -> String {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    assert!(
        s.len() == 24
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{what} is not a 24-hex id: {s:?}"
    );
    s.to_string()
}

/// Asserts `value` is an RFC 3339 time; returns it parsed.
pub fn assert_time(value: &Value, what: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what} {s:?} is not RFC 3339: {e}"))
}

/// Every object key anywhere in `v` (recursively), for "no such field anywhere" checks.
pub fn all_keys(v: &Value) -> Vec<String> {
    let mut out = vec![];
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    out.push(k.clone());
                    walk(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

pub fn object_keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

pub fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A problem body without `instance`, for "identical except instance" comparisons.
pub fn without_instance(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("instance");
    }
    v
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Auth {
    pub access: String,
    pub refresh: String,
    pub user: Value,
    pub body: Value,
    pub email: String,
    pub password: String,
}

impl Auth {
    pub fn id(&self) -> String {
        self.user["id"].as_str().unwrap().to_string()
    }
}

pub struct TestServer {
    pub base: String,
    pub port: u16,
    pub env: ServerEnv,
    pub client: reqwest::Client,
    pub mode: &'static str,
    child: Child,
    output: Output,
    keep_data: bool,
}

impl TestServer {
    /// `order-service serve` (API + worker) on a fresh data directory.
    pub async fn serve() -> TestServer {
        Self::start(ServerEnv::fresh(), "serve").await
    }

    /// `order-service api` (no worker, so orders stay pending) on a fresh, seeded data directory.
    pub async fn api() -> TestServer {
        let env = ServerEnv::fresh();
        let env2 = env.clone();
        blocking(move || seed(&env2)).await;
        Self::start(env, "api").await
    }

    pub async fn start(env: ServerEnv, mode: &'static str) -> TestServer {
        blocking(move || Self::start_blocking(env, mode)).await
    }

    fn start_blocking(env: ServerEnv, mode: &'static str) -> TestServer {
        let mut child = env.command(&[mode]).spawn().expect("spawn order-service");
        let output: Output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        drain(
            child.stdout.take().unwrap(),
            "stdout",
            output.clone(),
            Some(tx),
        );
        drain(child.stderr.take().unwrap(), "stderr", output.clone(), None);
        let port = match rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(port) => port,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "`order-service {mode}` did not print `{LISTEN_PREFIX}<port>` ({e:?}, exit: {status:?}); output:\n{}",
                    output.lock().unwrap()
                );
            }
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        TestServer {
            base: format!("http://127.0.0.1:{port}"),
            port,
            env,
            client,
            mode,
            child,
            output,
            keep_data: false,
        }
    }

    /// Stops the server but keeps its data directory, to start another process on it.
    pub fn stop(mut self) -> ServerEnv {
        self.keep_data = true;
        self.env.clone()
    }

    /// Kills the process at once (SIGKILL on Unix), as a crash would; the data directory stays.
    pub fn kill(&mut self) {
        self.keep_data = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id, to send it a signal (e.g. `kill -TERM`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `deadline` for the process to exit by itself; `None` if it is still running.
    pub fn wait_for_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn send(&self, rb: RequestBuilder) -> Resp {
        let req = rb.build().expect("build request");
        let method = req.method().clone();
        let path = req.url().path().to_string();
        let query = req.url().query().map(str::to_string);
        let res = self.client.execute(req).await.unwrap_or_else(|e| {
            panic!(
                "{method} {path} failed: {e}; server output:\n{}",
                self.output()
            )
        });
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("read body");
        Resp {
            method,
            path,
            query,
            status,
            headers,
            text,
        }
    }

    /// One JSON call: optional bearer token, optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut rb = self.request(method, path);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.send(rb).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    // --- auth ---------------------------------------------------------------------------------

    /// Checks the register/login/refresh answer shape and returns it as `Auth`.
    pub fn parse_auth(r: &Resp, email: &str, password: &str) -> Auth {
        assert_json_ct(r);
        let body = r.json();
        assert_eq!(
            object_keys(&body),
            keys(&[
                "user",
                "accessToken",
                "refreshToken",
                "tokenType",
                "expiresIn"
            ]),
            "auth answer fields: {}",
            r.ctx()
        );
        assert_eq!(body["tokenType"], json!("Bearer"), "{}", r.ctx());
        assert!(
            body["expiresIn"].as_u64().is_some_and(|n| n > 0),
            "expiresIn must be a positive integer: {}",
            r.ctx()
        );
        let access = body["accessToken"]
            .as_str()
            .filter(|s| !s.is_empty())
            .expect("accessToken")
            .to_string();
        let refresh = body["refreshToken"]
            .as_str()
            .filter(|s| !s.is_empty())
            .expect("refreshToken")
            .to_string();
        assert_ne!(access, refresh, "access and refresh tokens must differ");
        assert_user(&body["user"]);
        for k in all_keys(&body) {
            let k = k.to_ascii_lowercase();
            assert!(
                !k.contains("password") && !k.contains("hash"),
                "auth answer leaks `{k}`: {}",
                r.ctx()
            );
        }
        Auth {
            access,
            refresh,
            user: body["user"].clone(),
            body,
            email: email.to_string(),
            password: password.to_string(),
        }
    }

    pub async fn register_raw(&self, email: &str, password: &str, name: &str) -> Resp {
        self.post(
            "/api/auth/register",
            None,
            &json!({"email": email, "password": password, "name": name}),
        )
        .await
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Auth {
        let r = self.register_raw(email, password, name).await;
        r.assert_status(201);
        let auth = Self::parse_auth(&r, email, password);
        assert_eq!(
            auth.user["email"],
            json!(email.to_lowercase()),
            "{}",
            r.ctx()
        );
        assert_eq!(auth.user["name"], json!(name), "{}", r.ctx());
        assert_eq!(auth.user["role"], json!("user"), "{}", r.ctx());
        auth
    }

    /// Registers a fresh user with a unique email.
    pub async fn new_user(&self) -> Auth {
        self.register(&unique_email(), "correct horse battery", "Test Customer")
            .await
    }

    pub async fn login_raw(&self, email: &str, password: &str) -> Resp {
        self.post(
            "/api/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Auth {
        let r = self.login_raw(email, password).await;
        r.assert_status(200);
        let auth = Self::parse_auth(&r, email, password);
        assert_eq!(
            auth.user["email"],
            json!(email.to_lowercase()),
            "{}",
            r.ctx()
        );
        auth
    }

    pub async fn login_admin(&self) -> Auth {
        let auth = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(auth.user["role"], json!("admin"), "seeded admin's role");
        auth
    }

    pub async fn me(&self, token: &str) -> Resp {
        self.get("/api/auth/me", Some(token)).await
    }

    // --- products -----------------------------------------------------------------------------

    pub async fn create_product_raw(&self, admin: &Auth, body: &Value) -> Resp {
        self.post("/api/products", Some(&admin.access), body).await
    }

    pub async fn create_product(&self, admin: &Auth, name: &str, price: i64, stock: i64) -> Value {
        let body = json!({"name": name, "description": format!("{name} description"), "price": price, "stock": stock});
        let r = self.create_product_raw(admin, &body).await;
        r.assert_status(201);
        let p = r.json();
        assert_product(&p);
        assert_eq!(p["name"], json!(name), "{}", r.ctx());
        assert_eq!(p["price"], json!(price), "{}", r.ctx());
        assert_eq!(p["stock"], json!(stock), "{}", r.ctx());
        p
    }

    pub async fn get_product(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/products/{id}"), None).await;
        r.assert_status(200);
        assert_json_ct(&r);
        let p = r.json();
        assert_product(&p);
        p
    }

    pub async fn product_stock(&self, id: &str) -> i64 {
        self.get_product(id).await["stock"].as_i64().expect("stock")
    }

    // --- orders -------------------------------------------------------------------------------

    pub async fn place_order_raw(&self, auth: &Auth, body: &Value) -> Resp {
        self.post("/api/orders", Some(&auth.access), body).await
    }

    /// Places an order for `(productId, quantity)` lines with the default address; asserts 201.
    pub async fn place_order(&self, auth: &Auth, lines: &[(&str, i64)]) -> Value {
        let r = self.place_order_raw(auth, &order_body(lines)).await;
        r.assert_status(201);
        assert_json_ct(&r);
        let o = r.json();
        assert_order(&o);
        let id = o["id"].as_str().unwrap();
        assert_eq!(
            r.header("location").as_deref(),
            Some(format!("/api/orders/{id}").as_str()),
            "Location: {}",
            r.ctx()
        );
        assert_eq!(o["status"], json!("pending"), "{}", r.ctx());
        assert_eq!(o["userId"], auth.user["id"], "{}", r.ctx());
        o
    }

    pub async fn get_order(&self, auth: &Auth, id: &str) -> Value {
        let r = self
            .get(&format!("/api/orders/{id}"), Some(&auth.access))
            .await;
        r.assert_status(200);
        assert_json_ct(&r);
        let o = r.json();
        assert_order(&o);
        o
    }

    /// Polls `GET /api/orders/{id}` until the order has `status`; returns it.
    pub async fn poll_order_status(&self, auth: &Auth, id: &str, status: &str) -> Value {
        self.poll_order_status_within(auth, id, status, ORDER_DEADLINE)
            .await
    }

    /// Like `poll_order_status`, with the caller's deadline (for slow paths such as redelivery
    /// after a visibility timeout).
    pub async fn poll_order_status_within(
        &self,
        auth: &Auth,
        id: &str,
        status: &str,
        deadline: Duration,
    ) -> Value {
        poll_until(
            deadline,
            &format!("order {id} to become {status}"),
            || async {
                let r = self
                    .get(&format!("/api/orders/{id}"), Some(&auth.access))
                    .await;
                if r.status != 200 {
                    return Err(r.ctx());
                }
                let o = r.json();
                if o["status"] == json!(status) {
                    Ok(o)
                } else {
                    Err(format!("status {}", o["status"]))
                }
            },
        )
        .await
    }

    pub fn email_path(&self, order_id: &str, status: &str) -> PathBuf {
        self.env
            .mail_dir()
            .join(format!("order-{order_id}-{status}.eml"))
    }

    /// Waits for the email telling the customer that order `order_id` reached `status`, and
    /// returns it as RFC 5322 text: the `.eml` file in `$MAIL_DIR` with the embedded mailer, or
    /// the raw message SES (moto) accepted with the real backends.
    pub async fn find_email_file(&self, order_id: &str, status: &str) -> String {
        if let Some(real) = self.env.real.clone() {
            return find_sent_email(&real, order_id, status).await;
        }
        let path = self.email_path(order_id, status);
        poll_until(
            ORDER_DEADLINE,
            &format!("email file {}", path.display()),
            || {
                let path = path.clone();
                async move {
                    match std::fs::read(&path) {
                        Ok(bytes) if !bytes.is_empty() => {
                            Ok(String::from_utf8(bytes).expect("email file is not UTF-8"))
                        }
                        Ok(_) => Err("file is empty".into()),
                        Err(e) => Err(format!(
                            "{e}; mail dir has {:?}",
                            list_dir(path.parent().unwrap())
                        )),
                    }
                }
            },
        )
        .await
    }
}

/// The words the service's subject line uses for each status (see `actors::mailer`).
fn subject_marker(status: &str) -> &'static str {
    match status {
        "completed" => "is complete",
        "cancelled" => "has been cancelled",
        "failed" => "could not be completed",
        other => panic!("no email is sent for status {other}"),
    }
}

/// Emails SES accepted for this order and status (the real-backend counterpart of the files).
pub async fn sent_emails_for(real: &RealBackends, order_id: &str, status: &str) -> Vec<String> {
    let marker = subject_marker(status);
    real.moto
        .sent_emails()
        .await
        .into_iter()
        .filter(|e| e.subject.contains(order_id) && e.subject.contains(marker))
        .map(|e| e.raw)
        .collect()
}

async fn find_sent_email(real: &RealBackends, order_id: &str, status: &str) -> String {
    poll_until(
        ORDER_DEADLINE,
        &format!("SES email for order {order_id} ({status})"),
        || async {
            let mut found = sent_emails_for(real, order_id, status).await;
            match found.len() {
                0 => Err("not sent yet".to_string()),
                1 => Ok(found.remove(0)),
                n => {
                    panic!("{n} emails sent for order {order_id} ({status}); expected exactly one")
                }
            }
        },
    )
    .await
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- order-service {} output (data dir {}) -----\n{}----- end of output -----",
                self.mode,
                self.env.data_dir.display(),
                self.output()
            );
        } else if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.env.data_dir);
        }
    }
}

pub fn list_dir(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

pub fn assert_user(u: &Value) {
    assert_eq!(
        object_keys(u),
        keys(&["id", "email", "name", "role", "createdAt"]),
        "user fields: {u}"
    );
    assert_id(&u["id"], "user.id");
    assert_time(&u["createdAt"], "user.createdAt");
    assert!(u["email"].is_string() && u["name"].is_string(), "user: {u}");
    assert!(
        u["role"] == json!("user") || u["role"] == json!("admin"),
        "user.role: {u}"
    );
}

pub fn assert_product(p: &Value) {
    assert_eq!(
        object_keys(p),
        keys(&[
            "id",
            "name",
            "description",
            "price",
            "stock",
            "createdAt",
            "updatedAt"
        ]),
        "product fields: {p}"
    );
    assert_id(&p["id"], "product.id");
    assert!(p["name"].is_string(), "product.name: {p}");
    assert!(p["description"].is_string(), "product.description: {p}");
    assert!(
        p["price"].as_i64().is_some_and(|n| n >= 0),
        "product.price must be integer cents >= 0: {p}"
    );
    assert!(
        p["stock"].as_i64().is_some_and(|n| n >= 0),
        "product.stock must be an integer >= 0: {p}"
    );
    let c = assert_time(&p["createdAt"], "product.createdAt");
    let u = assert_time(&p["updatedAt"], "product.updatedAt");
    assert!(u >= c, "updatedAt before createdAt: {p}");
}

pub fn assert_order(o: &Value) {
    let mut want = keys(&[
        "id",
        "userId",
        "items",
        "shippingAddress",
        "paymentMethod",
        "status",
        "totalAmount",
        "createdAt",
        "updatedAt",
    ]);
    if o["status"] == json!("failed") {
        want.insert("failureReason".into());
    }
    assert_eq!(object_keys(o), want, "order fields: {o}");
    assert_id(&o["id"], "order.id");
    assert_id(&o["userId"], "order.userId");
    assert_time(&o["createdAt"], "order.createdAt");
    assert_time(&o["updatedAt"], "order.updatedAt");
    assert_eq!(
        object_keys(&o["shippingAddress"]),
        keys(&["street", "city", "state", "zipCode", "country"]),
        "order.shippingAddress: {o}"
    );
    let items = o["items"].as_array().expect("order.items");
    assert!(!items.is_empty(), "order without items: {o}");
    let mut total = 0;
    for it in items {
        assert_eq!(
            object_keys(it),
            keys(&[
                "productId",
                "productName",
                "unitPrice",
                "quantity",
                "lineTotal"
            ]),
            "order item fields: {it}"
        );
        assert_id(&it["productId"], "item.productId");
        let unit = it["unitPrice"].as_i64().expect("unitPrice integer");
        let qty = it["quantity"].as_i64().expect("quantity integer");
        assert_eq!(
            it["lineTotal"].as_i64(),
            Some(unit * qty),
            "lineTotal = unitPrice * quantity: {it}"
        );
        total += unit * qty;
    }
    assert_eq!(
        o["totalAmount"].as_i64(),
        Some(total),
        "totalAmount = sum of line totals: {o}"
    );
    assert!(
        ["pending", "processing", "completed", "failed", "cancelled"]
            .contains(&o["status"].as_str().unwrap_or("")),
        "order.status: {o}"
    );
}

pub fn default_address() -> Value {
    json!({"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"})
}

pub fn order_body(lines: &[(&str, i64)]) -> Value {
    json!({
        "items": lines.iter().map(|(id, q)| json!({"productId": id, "quantity": q})).collect::<Vec<_>>(),
        "shippingAddress": default_address(),
        "paymentMethod": "credit_card",
    })
}

pub fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// A small MIME reader for the `.eml` files (unfolds headers, decodes parts)
// ---------------------------------------------------------------------------------------------

pub struct Message {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Message {
    pub fn parse(raw: &str) -> Message {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = match raw.find("\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (raw.as_str(), ""),
        };
        let mut headers: Vec<(String, String)> = vec![];
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Message {
            headers,
            body: body.to_string(),
        }
    }

    /// The header's value, with RFC 2047 encoded words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_encoded_words(v))
    }

    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or_else(|| "text/plain".into())
    }

    /// Every non-multipart part (depth first) as (content type, decoded text).
    pub fn leaf_parts(&self) -> Vec<(String, String)> {
        let ct = self.content_type();
        if ct.to_ascii_lowercase().starts_with("multipart/") {
            let boundary = param(&ct, "boundary").expect("multipart without boundary");
            split_multipart(&self.body, &boundary)
                .into_iter()
                .flat_map(|p| Message::parse(&p).leaf_parts())
                .collect()
        } else {
            let cte = self
                .header("content-transfer-encoding")
                .unwrap_or_default()
                .to_ascii_lowercase();
            let bytes = match cte.as_str() {
                "quoted-printable" => decode_qp(&self.body),
                "base64" => base64_decode(&self.body, false).expect("part is not valid base64"),
                _ => self.body.as_bytes().to_vec(),
            };
            vec![(ct, String::from_utf8_lossy(&bytes).into_owned())]
        }
    }
}

pub fn param(header_value: &str, name: &str) -> Option<String> {
    header_value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn split_multipart(body: &str, boundary: &str) -> Vec<String> {
    let open = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = vec![];
    let mut current: Option<Vec<&str>> = None;
    for line in body.lines() {
        let t = line.trim_end();
        if t == close {
            if let Some(p) = current.take() {
                parts.push(p.join("\n"));
            }
            break;
        } else if t == open {
            if let Some(p) = current.take() {
                parts.push(p.join("\n"));
            }
            current = Some(vec![]);
        } else if let Some(p) = current.as_mut() {
            p.push(line);
        }
    }
    parts
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

pub fn decode_qp(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if i + 1 < b.len() && b[i + 1] == b'\n' {
                i += 2;
                continue;
            }
            if i + 2 < b.len() {
                if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn decode_encoded_words(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    let mut last_was_encoded = false;
    while let Some(start) = rest.find("=?") {
        let after = &rest[start + 2..];
        let decoded = (|| {
            let (_charset, after) = after.split_once('?')?;
            let (enc, after) = after.split_once('?')?;
            let end = after.find("?=")?;
            let text = &after[..end];
            let bytes = match enc.to_ascii_uppercase().as_str() {
                "B" => base64_decode(text, false)?,
                "Q" => decode_qp(&text.replace('_', " ")),
                _ => return None,
            };
            Some((
                String::from_utf8_lossy(&bytes).into_owned(),
                after.len() - end - 2,
            ))
        })();
        let prefix = &rest[..start];
        match decoded {
            Some((text, remaining)) => {
                // Whitespace between two adjacent encoded words is not part of the text.
                if !(last_was_encoded && prefix.trim().is_empty()) {
                    out.push_str(prefix);
                }
                out.push_str(&text);
                rest = &rest[rest.len() - remaining..];
                last_was_encoded = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = after;
                last_was_encoded = false;
            }
        }
    }
    out.push_str(rest);
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Decodes standard or URL-safe base64, ignoring whitespace and padding.
pub fn base64_decode(s: &str, url: bool) -> Option<Vec<u8>> {
    let alphabet = if url { B64URL } else { B64 };
    let mut out = vec![];
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        if c.is_ascii_whitespace() || c == b'=' {
            continue;
        }
        let v = alphabet.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// URL-safe base64 without padding (JWT segments).
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=n {
            out.push(B64URL[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
