//! `connections` mode: opens N keep-alive connections, sends one `GET /health` on each, holds
//! them idle, and reads what they cost the service in memory. `streams` mode does the same
//! with N open status streams (`GET /api/orders/events`), each waiting for events.
//!
//! Raw TCP rather than the pooled client: a pool reuses connections, and here every connection
//! must be a distinct, open, idle socket on the server, the way a fleet of idle clients holds them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::procfs::{memory_of, Memory};

/// Connections being opened at once: well inside the listen backlog.
const CONNECT_CONCURRENCY: usize = 64;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionsReport {
    pub requested: usize,
    /// Connections that answered their first `GET /health` with 200.
    pub opened: usize,
    /// Of those, how many answered a second request after the hold: still open, still served.
    pub alive_after_hold: usize,
    pub hold_secs: f64,
    /// Status streams rather than idle keep-alive connections.
    pub streams: bool,
    /// The service before opening any, with all of them open, and its peak so far.
    pub service_before: Option<Memory>,
    pub service_with_connections: Option<Memory>,
}

fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let url = reqwest::Url::parse(url).with_context(|| format!("bad --url {url:?}"))?;
    if url.scheme() != "http" {
        bail!("connections mode speaks plain http only");
    }
    let host = url.host_str().context("--url has no host")?.to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    Ok((host, port))
}

/// One `GET /health` on an open connection; true on a complete 200 answer. The body is read
/// to its `Content-Length`, so the connection is left clean for the next request.
async fn health_on(stream: &mut TcpStream, host: &str) -> anyhow::Result<bool> {
    let request = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the answer");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("answer without content-length")?;
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside the body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(head.starts_with("http/1.1 200"))
}

/// Opens `GET /api/orders/events` on a fresh connection; true once the stream has begun (a 200
/// head and the stream's first line, `retry:`). The answer is chunked and never ends, so
/// this reads until it sees that line rather than to a length.
async fn stream_on(stream: &mut TcpStream, host: &str, token: &str) -> anyhow::Result<bool> {
    let request = format!(
        "GET /api/orders/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the stream began");
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf.starts_with(b"HTTP/1.1 200") && buf.len() >= 12 {
            return Ok(false);
        }
        if buf.windows(6).any(|w| w == b"retry:") {
            return Ok(true);
        }
    }
}

/// A stream is still open if reading it does not find its end (a heartbeat may come).
async fn still_open(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 512];
    match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) => false,
        Ok(Ok(_)) | Err(_) => true,
    }
}

/// Holds `count` connections (each with one `GET /health`), or with `stream_token`, `count`
/// status streams opened with that bearer token.
pub async fn hold(
    url: &str,
    count: usize,
    hold: Duration,
    service_pid: Option<u32>,
    stream_token: Option<String>,
) -> anyhow::Result<ConnectionsReport> {
    let (host, port) = host_port(url)?;
    let service_before = service_pid.and_then(memory_of);

    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let (host, permits, token) = (host.clone(), permits.clone(), stream_token.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let mut stream = TcpStream::connect((host.as_str(), port)).await.ok()?;
            stream.set_nodelay(true).ok()?;
            let begun = match &token {
                Some(token) => stream_on(&mut stream, &host, token).await,
                None => health_on(&mut stream, &host).await,
            };
            match begun {
                Ok(true) => Some(stream),
                _ => None,
            }
        });
    }
    let mut open = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(stream)) = done {
            open.push(stream);
        }
    }
    let opened = open.len();

    // Let the service settle its per-connection buffers before looking at its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let service_with_connections = service_pid.and_then(memory_of);
    tokio::time::sleep(hold).await;

    let mut alive_after_hold = 0;
    for stream in &mut open {
        let alive = match stream_token {
            Some(_) => still_open(stream).await,
            None => matches!(health_on(stream, &host).await, Ok(true)),
        };
        if alive {
            alive_after_hold += 1;
        }
    }
    Ok(ConnectionsReport {
        requested: count,
        opened,
        alive_after_hold,
        hold_secs: hold.as_secs_f64(),
        streams: stream_token.is_some(),
        service_before,
        service_with_connections,
    })
}
