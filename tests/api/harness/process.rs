//! The service as a child process: the environment it gets (and the developer's shell does not
//! leak into), its output collected line by line, and one-shot CLI runs such as `seed`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::names::{fresh_data_dir, random_string};
use super::real::{real_backends, RealBackends};
use super::{BIN, LISTEN_PREFIX, POLL_EVERY};

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

    /// A fresh environment on the embedded backends whatever `TEST_BACKENDS` says, with these
    /// variables: for the tests that choose their backends themselves.
    pub fn embedded(extra: &[(&str, &str)]) -> Self {
        ServerEnv {
            data_dir: fresh_data_dir(),
            jwt_secret: random_string(48),
            jwt_refresh_secret: random_string(48),
            real: None,
            extra: Vec::new(),
        }
        .with_vars(extra)
    }

    /// The same environment (data dir, secrets, backends) with more variables, e.g. for a second
    /// process on the same data.
    pub fn with_vars(mut self, extra: &[(&str, &str)]) -> Self {
        self.extra
            .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    pub(super) fn command(&self, args: &[&str]) -> Command {
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
        // Nor the developer's OpenTelemetry settings: a test that wants traces sets its own.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(var);
            }
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

    /// The process in `mode`, started and not waited for (its output discarded): for tests of
    /// what a process does before it serves, such as a signal while it waits for a backend.
    pub fn spawn_unwaited(&self, mode: &str) -> std::process::Child {
        self.command(&[mode])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn order-service")
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.data_dir.join("mail")
    }
}

pub type Output = Arc<Mutex<String>>;

pub fn drain<R: Read + Send + 'static>(
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

pub fn list_dir(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
