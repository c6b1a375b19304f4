//! The service's HTTP API as the load generator uses it: one typed call per request, each
//! turning the answer into either the few fields a scenario needs or a [`Failure`].
//!
//! Calls neither time nor record themselves, so a scenario decides which instant a latency is
//! measured from (the intended send time, in the open model).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::RETRY_AFTER;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::stats::Failure;

/// One client for the whole run: its connection pool (keep-alive on) is shared by every virtual
/// user, so a closed-model run holds about one connection per user, as a real client fleet would.
#[derive(Clone)]
pub struct Api {
    http: Client,
    base: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    pub access_token: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProductView {
    pub id: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    pub data: Vec<ProductView>,
    pub total_pages: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub id: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The health answer's shape, so a wrong body is a failure rather than a silent success.
#[derive(Deserialize)]
struct Health {
    #[allow(dead_code)] // Read only to prove the body is the health document.
    status: String,
}

fn transport(e: &reqwest::Error) -> Failure {
    Failure::Transport(if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    })
}

impl Api {
    pub fn new(base: &str, pool_size: usize, timeout: Duration) -> anyhow::Result<Api> {
        let http = Client::builder()
            .pool_max_idle_per_host(pool_size)
            // Idle connections are dropped well before the server's keep-alive timeout could
            // race a request on them.
            .pool_idle_timeout(Duration::from_secs(3))
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends, checks the status and parses the body; a body that is not what we expect counts as
    /// a transport failure of kind `body`.
    async fn call<T: DeserializeOwned>(
        req: RequestBuilder,
        expect: StatusCode,
    ) -> Result<T, Failure> {
        Self::answer(req, expect).await.result
    }

    /// As [`Api::call`], keeping the answer's `Retry-After` (whole seconds), which the service
    /// sends with a shed creation (503) and with a pending order.
    async fn answer<T: DeserializeOwned>(req: RequestBuilder, expect: StatusCode) -> Answer<T> {
        let response = match req.send().await {
            Ok(response) => response,
            Err(e) => return Answer::failed(transport(&e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the body even on failure, so the connection goes back to the pool.
        let result = match response.bytes().await {
            Err(e) => Err(transport(&e)),
            Ok(_) if status != expect => Err(Failure::Status(status.as_u16())),
            Ok(body) => serde_json::from_slice(&body).map_err(|_| Failure::Transport("body")),
        };
        Answer {
            result,
            retry_after,
        }
    }

    /// The service's Prometheus text (`GET /metrics`).
    pub async fn metrics_text(&self) -> Result<String, Failure> {
        let response = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .map_err(|e| transport(&e))?;
        if response.status() != StatusCode::OK {
            return Err(Failure::Status(response.status().as_u16()));
        }
        response.text().await.map_err(|e| transport(&e))
    }

    pub async fn health(&self) -> Result<(), Failure> {
        Self::call::<Health>(self.http.get(self.url("/health")), StatusCode::OK)
            .await
            .map(drop)
    }

    pub async fn list_products(&self, page: u64, limit: u64) -> Result<ProductPage, Failure> {
        let url = self.url(&format!("/api/products?page={page}&limit={limit}"));
        Self::call(self.http.get(url), StatusCode::OK).await
    }

    pub async fn get_product(&self, id: &str) -> Result<ProductView, Failure> {
        let url = self.url(&format!("/api/products/{id}"));
        Self::call(self.http.get(url), StatusCode::OK).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<Tokens, Failure> {
        let req = self
            .http
            .post(self.url("/api/auth/login"))
            .json(&json!({"email": email, "password": password}));
        Self::call(req, StatusCode::OK).await
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
    ) -> Result<Tokens, Failure> {
        let req = self
            .http
            .post(self.url("/api/auth/register"))
            .json(&json!({"email": email, "password": password, "name": name}));
        Self::call(req, StatusCode::CREATED).await
    }

    pub async fn create_product(
        &self,
        admin_token: &str,
        name: &str,
        price: i64,
        stock: i64,
    ) -> Result<ProductView, Failure> {
        let req = self
            .http
            .post(self.url("/api/products"))
            .bearer_auth(admin_token)
            .json(&json!({
                "name": name,
                "description": "created by loadgen for a benchmark run",
                "price": price,
                "stock": stock,
            }));
        Self::call(req, StatusCode::CREATED).await
    }

    /// Places an order of quantity 1 of each product.
    pub async fn create_order(&self, token: &str, product_ids: &[&str]) -> Answer<OrderView> {
        let items: Vec<Value> = product_ids
            .iter()
            .map(|id| json!({"productId": id, "quantity": 1}))
            .collect();
        let req = self
            .http
            .post(self.url("/api/orders"))
            .bearer_auth(token)
            .json(&json!({
                "items": items,
                "shippingAddress": {
                    "street": "1 Benchmark Way",
                    "city": "Springfield",
                    "state": "IL",
                    "zipCode": "62701",
                    "country": "US",
                },
                "paymentMethod": "credit_card",
            }));
        Self::answer(req, StatusCode::CREATED).await
    }

    pub async fn get_order(&self, token: &str, id: &str) -> Answer<OrderView> {
        let req = self
            .http
            .get(self.url(&format!("/api/orders/{id}")))
            .bearer_auth(token);
        Self::answer(req, StatusCode::OK).await
    }

    /// Opens `GET /api/orders/{id}/events`: the answer's head, its body still to be read. The
    /// stream is meant to stay open until the order is done, so the run's per-request timeout
    /// does not apply; `timeout` bounds the whole stream instead.
    pub async fn order_events(
        &self,
        token: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, Failure> {
        self.open_stream(&format!("/api/orders/{id}/events"), token, None, timeout)
            .await
    }

    /// Opens `GET /api/orders/events`, every change to the caller's orders, resuming after
    /// `last_event_id` when given; `timeout` bounds the whole stream.
    pub async fn user_events(
        &self,
        token: &str,
        last_event_id: Option<&str>,
        timeout: Duration,
    ) -> Result<reqwest::Response, Failure> {
        self.open_stream("/api/orders/events", token, last_event_id, timeout)
            .await
    }

    async fn open_stream(
        &self,
        path: &str,
        token: &str,
        last_event_id: Option<&str>,
        timeout: Duration,
    ) -> Result<reqwest::Response, Failure> {
        let mut req = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .timeout(timeout);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let response = req.send().await.map_err(|e| transport(&e))?;
        if response.status() != StatusCode::OK {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            return Err(Failure::Status(status));
        }
        Ok(response)
    }

    /// Reads an order's status stream until its first terminal status (completed, failed,
    /// cancelled), and returns the order as that event carried it.
    pub async fn until_terminal(mut response: reqwest::Response) -> Result<OrderView, Failure> {
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            while let Some(block) = next_block(&mut buffer) {
                if let Some(order) = parse_event(&block)?.and_then(|e| e.terminal()) {
                    return Ok(order);
                }
            }
            match response.chunk().await.map_err(|e| transport(&e))? {
                Some(bytes) => buffer.extend_from_slice(&bytes),
                // Ended without a terminal status (the service dropped the stream, or shut down).
                None => return Err(Failure::Transport("body")),
            }
        }
    }
}

/// What a call answered, and the `Retry-After` it carried.
pub struct Answer<T> {
    pub result: Result<T, Failure>,
    pub retry_after: Option<Duration>,
}

impl<T> Answer<T> {
    fn failed(f: Failure) -> Answer<T> {
        Answer {
            result: Err(f),
            retry_after: None,
        }
    }
}

#[derive(Deserialize)]
struct EventData {
    order: OrderView,
}

/// One status event of a stream: its `id:` (for `Last-Event-ID`) and the order it carried.
pub struct StatusEvent {
    pub id: Option<String>,
    pub order: OrderView,
}

impl StatusEvent {
    /// The order, if the event says it reached a terminal status.
    pub fn terminal(self) -> Option<OrderView> {
        matches!(
            self.order.status.as_str(),
            "completed" | "failed" | "cancelled"
        )
        .then_some(self.order)
    }
}

/// Takes the next complete event block (up to its blank line) off the front of `buffer`.
pub fn next_block(buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buffer.windows(2).position(|w| w == b"\n\n")?;
    Some(buffer.drain(..end + 2).collect())
}

/// The status event of a block; `None` for comments (heartbeats) and `retry:`.
pub fn parse_event(block: &[u8]) -> Result<Option<StatusEvent>, Failure> {
    let text = std::str::from_utf8(block).map_err(|_| Failure::Transport("body"))?;
    let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
        return Ok(None);
    };
    let event: EventData = serde_json::from_str(data).map_err(|_| Failure::Transport("body"))?;
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .map(str::to_string);
    Ok(Some(StatusEvent {
        id,
        order: event.order,
    }))
}
