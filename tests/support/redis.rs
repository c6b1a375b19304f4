//! A throwaway redis-server on a free loopback port, without persistence, that a test can kill
//! and restart on the same port to see how the service lives through a Redis outage.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{find_binary, free_port, temp_dir, wait_for_port, ServerProcess};

pub struct RedisServer {
    pub process: ServerProcess,
    pub port: u16,
    binary: PathBuf,
    dir: PathBuf,
}

/// Starts redis-server, or returns `None` (after saying why) when it is not installed.
pub fn start() -> Option<RedisServer> {
    let binary = find_binary(
        "REDIS_SERVER_BIN",
        "redis-server",
        "apt-get install redis-server",
    )?;
    let port = free_port();
    let dir = temp_dir("redis");
    let process = spawn(&binary, port, &dir);
    Some(RedisServer {
        process,
        port,
        binary,
        dir,
    })
}

fn spawn(binary: &PathBuf, port: u16, dir: &PathBuf) -> ServerProcess {
    let mut child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        // No snapshots, no append-only file: the data is throwaway, and disk writes only slow
        // the tests down.
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn redis-server");
    wait_for_port(port, "redis-server", &mut child);
    // The data dir is removed by `RedisServer`'s drop, not by the process guard, so a restart
    // can reuse it.
    ServerProcess::new(child, None)
}

impl RedisServer {
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, for tools and for `REDIS_HOST`-style settings.
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host(), self.port)
    }

    /// Stops the server (SIGKILL), as a crash or a network cut would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts a fresh server on the same port (empty, as after a crash without persistence).
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(&self.binary, self.port, &self.dir);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
