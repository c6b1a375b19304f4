//! Toxiproxy v2.5.0 (Shopify's fault proxy) as a child process on a free port, and a small
//! client for its HTTP API: proxies between the service and each backend, toxics on them
//! (latency, reset_peer, timeout, bandwidth), a proxy turned off and on, and `/reset`.
//!
//! Why Toxiproxy rather than `blackhole.rs` for the chaos campaign: it is the fault proxy
//! production teams use, its toxics are the faults production sees, and one server drives them
//! all over HTTP. `blackhole.rs` stays for the one fault Toxiproxy can not make: a reply lost
//! after its request was applied.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::{find_binary, free_port, temp_dir, wait_for_port, ServerProcess};

const INSTALL_HINT: &str =
    "install it with `go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0` or run scripts/test";

pub struct Toxiproxy {
    pub process: ServerProcess,
    /// Port of the HTTP API.
    pub port: u16,
    client: reqwest::Client,
}

/// One proxy: where the service connects (`listen_port`) and what it forwards to.
#[derive(Clone, Debug)]
pub struct Proxy {
    pub name: String,
    pub listen_port: u16,
    pub upstream_port: u16,
}

/// Starts toxiproxy-server, or returns `None` (after saying why) when it is not installed.
/// `seed` seeds its own randomness (jitter, toxicity), so a campaign's seed covers it too.
pub fn start(seed: u64) -> Option<Toxiproxy> {
    let binary: PathBuf = find_binary("TOXIPROXY_BIN", "toxiproxy-server", INSTALL_HINT)?;
    let port = free_port();
    let dir = temp_dir("toxiproxy");
    let log = std::fs::File::create(dir.join("toxiproxy.log")).expect("create toxiproxy log");
    let mut child = Command::new(&binary)
        .args(["-host", "127.0.0.1", "-port", &port.to_string()])
        .args(["-seed", &seed.to_string()])
        // Its info log names every connection; warnings are what explain a failure.
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    wait_for_port(port, "toxiproxy-server", &mut child);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    Some(Toxiproxy {
        process: ServerProcess::new(child, Some(&dir)),
        port,
        client,
    })
}

impl Toxiproxy {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// One API call; anything but a 2xx is a broken test setup, so it panics with the answer.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self.client.request(method.clone(), self.url(path));
        if let Some(body) = &body {
            rb = rb.json(body);
        }
        let res = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("toxiproxy {method} {path}: {e}"));
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "toxiproxy {method} {path} {body:?} -> {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A proxy named `name` from a free loopback port to `upstream_port`.
    pub async fn create_proxy(&self, name: &str, upstream_port: u16) -> Proxy {
        let listen_port = free_port();
        self.call(
            reqwest::Method::POST,
            "/proxies",
            Some(json!({
                "name": name,
                "listen": format!("127.0.0.1:{listen_port}"),
                "upstream": format!("127.0.0.1:{upstream_port}"),
                "enabled": true,
            })),
        )
        .await;
        Proxy {
            name: name.to_string(),
            listen_port,
            upstream_port,
        }
    }

    /// Adds toxic `toxic` of `kind` (e.g. `latency`) on the `stream` (`upstream`: requests,
    /// `downstream`: replies) of `proxy`, on every connection.
    pub async fn add_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        kind: &str,
        stream: &str,
        attributes: Value,
    ) {
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}/toxics"),
            Some(json!({
                "name": toxic,
                "type": kind,
                "stream": stream,
                "toxicity": 1.0,
                "attributes": attributes,
            })),
        )
        .await;
    }

    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) {
        self.call(
            reqwest::Method::DELETE,
            &format!("/proxies/{proxy}/toxics/{toxic}"),
            None,
        )
        .await;
    }

    /// Takes the proxy down (`false`: it stops listening and drops every connection, as a
    /// backend that went away) or brings it back.
    pub async fn set_enabled(&self, proxy: &str, enabled: bool) {
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}"),
            Some(json!({ "enabled": enabled })),
        )
        .await;
    }

    /// Every proxy enabled again and every toxic removed.
    pub async fn reset(&self) {
        self.call(reqwest::Method::POST, "/reset", None).await;
    }

    /// The proxies with their toxics, as the server reports them.
    pub async fn proxies(&self) -> Value {
        self.call(reqwest::Method::GET, "/proxies", None).await
    }
}
