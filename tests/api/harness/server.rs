//! `TestServer`: one `order-service` process on a random port with its own data, and the HTTP
//! client that talks to it. Killed on drop; its output is printed when the test failed.

use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use super::poll::blocking;
use super::process::{drain, seed, Output, ServerEnv};
use super::response::Resp;
use super::{LISTEN_PREFIX, POLL_EVERY, STARTUP_DEADLINE};

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
        blocking(move || Self::launch(env, mode)).await
    }

    /// `start` for tests that are not async: blocks until the server listens.
    pub fn launch(env: ServerEnv, mode: &'static str) -> TestServer {
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
            // Under actix's 5 s keep-alive: a pooled connection the server is closing would
            // otherwise be reused and fail the request ("error sending request").
            .pool_idle_timeout(Duration::from_secs(3))
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
