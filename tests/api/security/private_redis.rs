//! A Redis the test can reconfigure while the service uses it: the real-backend pass's own, or
//! one started for the test on the embedded pass. Commands go over a plain TCP connection in
//! Redis's inline form, so the test needs no Redis client of its own.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;

use crate::harness::support::redis::RedisServer;
use crate::harness::*;

pub struct PrivateRedis {
    pub port: u16,
    /// Kept alive for the test when it was started here.
    _own: Option<Arc<RedisServer>>,
}

impl PrivateRedis {
    /// `env` pointed at a Redis: its real-backend one, or a new one (`None` when redis-server
    /// is not installed, after the harness said so).
    pub fn for_env(env: ServerEnv) -> Option<(ServerEnv, PrivateRedis)> {
        if let Some(real) = &env.real {
            let port = real.redis.port();
            return Some((env, PrivateRedis { port, _own: None }));
        }
        let own = Arc::new(crate::harness::support::redis::start()?);
        let port = own.port();
        let env = env.with_vars(&[
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", &port.to_string()),
        ]);
        Some((
            env,
            PrivateRedis {
                port,
                _own: Some(own),
            },
        ))
    }

    /// Runs one inline command; returns the first line of the reply (e.g. `+OK`).
    pub fn command(&self, line: &str) -> String {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        conn.write_all(format!("{line}\r\n").as_bytes())
            .expect("send to redis");
        let mut reply = String::new();
        BufReader::new(conn)
            .read_line(&mut reply)
            .expect("read from redis");
        reply.trim_end().to_string()
    }

    /// Makes every write fail with an error (`NOREPLICAS`) while reads still work: the cache
    /// answers, but can not record anything.
    pub fn refuse_writes(&self, refuse: bool) {
        let n = if refuse { 1 } else { 0 };
        let reply = self.command(&format!("CONFIG SET min-replicas-to-write {n}"));
        assert_eq!(reply, "+OK", "CONFIG SET min-replicas-to-write {n}");
    }
}
