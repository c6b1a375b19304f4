//! Real servers for tests, started as child processes on free ports with throwaway data:
//! FerretDB (MongoDB wire protocol), redis-server, and moto (SQS and SES).
//!
//! Each `start()` returns `None` with a visible "SKIPPED" line when the server is not installed,
//! or panics instead when `REQUIRE_BACKENDS=1` (CI), so a missing server can never pass silently.
//! `scripts/test` installs all three and exports their paths.
#![allow(dead_code)]

pub mod ferretdb;
pub mod moto;
pub mod redis;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when a missing server must fail the run (CI sets it).
pub fn backends_required() -> bool {
    std::env::var("REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// Finds a server binary from its env var (set by `scripts/test`) or on PATH. `None` means the
/// caller must skip: this has already printed why, or panicked under `REQUIRE_BACKENDS=1`.
pub fn find_binary(env_var: &str, name: &str, install_hint: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os(env_var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        });
    if candidate.is_none() {
        let message = format!("{name} not found (set {env_var} or put it on PATH; {install_hint})");
        if backends_required() {
            panic!("REQUIRE_BACKENDS=1 but {message}");
        }
        eprintln!("SKIPPED: {message}");
    }
    candidate
}

/// A free TCP port on loopback (bound then released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A fresh empty directory under the system temp dir, unique per process and call.
pub fn temp_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "order-service-{label}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Waits until something accepts TCP connections on `port`, or panics with `what` after 30 s.
pub fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A child process killed (and its data removed) when the guard is dropped.
pub struct ServerProcess {
    pub child: Child,
    pub data_dir: Option<PathBuf>,
}

impl ServerProcess {
    pub fn new(child: Child, data_dir: Option<&Path>) -> Self {
        ServerProcess {
            child,
            data_dir: data_dir.map(Path::to_path_buf),
        }
    }

    /// Stops the server (SIGKILL), e.g. to test what happens when a backend goes away.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
