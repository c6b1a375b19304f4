//! Real servers for tests, started as child processes on free ports with throwaway data:
//! FerretDB (MongoDB wire protocol), redis-server, moto (SQS and SES), Jaeger (traces), and
//! Toxiproxy (network faults between the service and the others).
//!
//! Each `start()` returns `None` with a visible "SKIPPED" line when the server is not installed,
//! or panics instead when `REQUIRE_BACKENDS=1` (CI), so a missing server can never pass silently.
//! `scripts/test` installs all three and exports their paths.
#![allow(dead_code)]

pub mod blackhole;
pub mod ferretdb;
pub mod jaeger;
pub mod moto;
pub mod redis;
pub mod toxiproxy;

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
        .or_else(|| which::which(name).ok());
    if candidate.is_none() {
        let message = format!("{name} not found (set {env_var} or put it on PATH; {install_hint})");
        if backends_required() {
            panic!("REQUIRE_BACKENDS=1 but {message}");
        }
        eprintln!("SKIPPED: {message}");
    }
    candidate
}

/// Ports handed to test servers: below Linux's ephemeral range (32768–60999), so the local end
/// of some outgoing connection can never take a port between our check and the server's bind
/// (a port the kernel picked with `bind(0)` comes from that very range, and was seen taken by
/// a client socket in that gap). Spread by process id, so concurrent test processes start
/// far apart.
const TEST_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A free TCP port on loopback for a server to bind right after: each call in this process
/// gets a different port, checked free by binding it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(TEST_PORTS.start + offset).expect("test ports fit in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// A fresh empty directory under the system temp dir, unique per process and call.
/// The caller owns it (the servers remove theirs when they stop), so it is kept past this call.
pub fn temp_dir(label: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("order-service-{label}-"))
        .tempdir()
        .expect("create temp dir")
        .keep()
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
