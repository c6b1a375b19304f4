//! The service's HTTP API as the load generator uses it: one typed call per request, each
//! turning the answer into either the few fields a scenario needs or a [`Failure`].
//!
//! Calls neither time nor record themselves, so a scenario decides which instant a latency is
//! measured from (the intended send time, in the open model).

use std::time::Duration;

use chrono::{DateTime, Utc};
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
        let response = req.send().await.map_err(|e| transport(&e))?;
        let status = response.status();
        // Read the body even on failure, so the connection goes back to the pool.
        let body = response.bytes().await.map_err(|e| transport(&e))?;
        if status != expect {
            return Err(Failure::Status(status.as_u16()));
        }
        serde_json::from_slice(&body).map_err(|_| Failure::Transport("body"))
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
    pub async fn create_order(
        &self,
        token: &str,
        product_ids: &[&str],
    ) -> Result<OrderView, Failure> {
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
        Self::call(req, StatusCode::CREATED).await
    }

    pub async fn get_order(&self, token: &str, id: &str) -> Result<OrderView, Failure> {
        let req = self
            .http
            .get(self.url(&format!("/api/orders/{id}")))
            .bearer_auth(token);
        Self::call(req, StatusCode::OK).await
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
        let response = self
            .http
            .get(self.url(&format!("/api/orders/{id}/events")))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport(&e))?;
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
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buffer.drain(..end + 2).collect();
                if let Some(order) = terminal_order(&block)? {
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

#[derive(Deserialize)]
struct EventData {
    order: OrderView,
}

/// The order of a status event whose status is terminal; `None` for other events, comments
/// and `retry:`.
fn terminal_order(block: &[u8]) -> Result<Option<OrderView>, Failure> {
    let text = std::str::from_utf8(block).map_err(|_| Failure::Transport("body"))?;
    let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
        return Ok(None);
    };
    let event: EventData = serde_json::from_str(data).map_err(|_| Failure::Transport("body"))?;
    Ok(matches!(
        event.order.status.as_str(),
        "completed" | "failed" | "cancelled"
    )
    .then_some(event.order))
}
