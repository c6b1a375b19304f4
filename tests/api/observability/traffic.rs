//! The traffic that feeds every panel: one burst over every flow a dashboard shows, then a
//! trickle that keeps `rate()` windows fed while the test queries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::prometheus::http_client;
use super::{ORDER_DEADLINE, POLL_EVERY, SEED_ADMIN, SEED_USER};
use crate::harness::unique;

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

/// What the burst left behind for the steady traffic, and whether a cancellation happened.
#[derive(Clone, Debug)]
pub struct Fed {
    pub user_token: String,
    pub order_id: String,
    pub product_id: String,
    pub cancelled: bool,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            client: http_client(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let res = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        status: u16,
    ) -> Value {
        let (got, json) = self.call(method.clone(), path, token, body).await;
        assert_eq!(got, status, "{method} {path} answered {got}: {json}");
        json
    }

    pub async fn text(&self, path: &str) -> String {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        res.text().await.expect("read body")
    }

    pub async fn login(&self, (email, password): (&str, &str)) -> Value {
        let body = json!({"email": email, "password": password});
        self.expect(Method::POST, "/api/auth/login", None, Some(&body), 200)
            .await
    }

    pub async fn place_order(&self, token: &str, product_id: &str, quantity: i64) -> (u16, Value) {
        let body = order_body(product_id, quantity);
        self.call(Method::POST, "/api/orders", Some(token), Some(&body))
            .await
    }

    /// Polls the order (never sleeps as synchronisation) until it has `status`.
    pub async fn wait_for_status(&self, token: &str, id: &str, status: &str) {
        let start = Instant::now();
        loop {
            let (code, order) = self
                .call(Method::GET, &format!("/api/orders/{id}"), Some(token), None)
                .await;
            if code == 200 && order["status"] == json!(status) {
                return;
            }
            assert!(
                start.elapsed() < ORDER_DEADLINE,
                "order {id} did not become {status} within {ORDER_DEADLINE:?}; last: {code} {order}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

pub fn order_body(product_id: &str, quantity: i64) -> Value {
    json!({
        "items": [{"productId": product_id, "quantity": quantity}],
        "shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"},
        "paymentMethod": "credit_card",
    })
}

pub fn token(auth: &Value, which: &str) -> String {
    auth[which]
        .as_str()
        .unwrap_or_else(|| panic!("no {which} in {auth}"))
        .to_string()
}

/// One pass over every flow a panel shows: logins (good and bad), a registration (and a
/// duplicate), refreshes (good and reused), rejected tokens (garbage and revoked), catalogue
/// reads, a product created, orders completed, refused for stock and for an unknown product,
/// a cancellation, cached order reads and a 404.
pub async fn drive_traffic(api: &Api) -> Fed {
    let user = api.login(SEED_USER).await;
    let user_token = token(&user, "accessToken");
    let admin = api.login(SEED_ADMIN).await;
    let admin_token = token(&admin, "accessToken");

    // auth_logins_total{outcome="invalid_credentials"}
    let bad = json!({"email": SEED_USER.0, "password": "not-the-password"});
    api.expect(Method::POST, "/api/auth/login", None, Some(&bad), 401)
        .await;

    // Registration (password hash), then the same email again (email_taken).
    let email = format!("{}@example.com", unique("observer"));
    let reg_body = json!({"email": email, "password": "observer-password-1", "name": "Observer"});
    let reg = api
        .expect(
            Method::POST,
            "/api/auth/register",
            None,
            Some(&reg_body),
            201,
        )
        .await;
    api.expect(
        Method::POST,
        "/api/auth/register",
        None,
        Some(&reg_body),
        409,
    )
    .await;

    // A refresh that succeeds, then the spent token again: `reused`, which revokes the session,
    // so the new access token is then refused as `revoked`. Done on the throwaway user only.
    let spent = json!({"refreshToken": token(&reg, "refreshToken")});
    let renewed = api
        .expect(Method::POST, "/api/auth/refresh", None, Some(&spent), 200)
        .await;
    api.expect(Method::POST, "/api/auth/refresh", None, Some(&spent), 401)
        .await;
    let revoked = token(&renewed, "accessToken");
    api.expect(Method::GET, "/api/auth/me", Some(&revoked), None, 401)
        .await;
    // A garbage bearer token: auth_tokens_rejected_total{reason="invalid"}.
    api.expect(
        Method::GET,
        "/api/orders",
        Some("garbage.token.value"),
        None,
        401,
    )
    .await;

    api.expect(Method::GET, "/api/products?limit=100", None, None, 200)
        .await;
    let stocked = json!({"name": unique("Observability Widget"), "description": "Stocked for the observability test", "price": 1250, "stock": 100000});
    let stocked = api
        .expect(
            Method::POST,
            "/api/products",
            Some(&admin_token),
            Some(&stocked),
            201,
        )
        .await;
    let product_id = stocked["id"].as_str().expect("product id").to_string();
    let scarce = json!({"name": unique("Observability Rarity"), "description": "One in stock", "price": 99000, "stock": 1});
    let scarce = api
        .expect(
            Method::POST,
            "/api/products",
            Some(&admin_token),
            Some(&scarce),
            201,
        )
        .await;
    let scarce_id = scarce["id"].as_str().expect("product id").to_string();
    api.expect(
        Method::GET,
        &format!("/api/products/{product_id}"),
        None,
        None,
        200,
    )
    .await;

    // Orders through the whole pipeline: queue, worker, completion, email.
    let mut order_ids = vec![];
    for _ in 0..5 {
        let (code, order) = api.place_order(&user_token, &product_id, 1).await;
        assert_eq!(code, 201, "place order: {order}");
        order_ids.push(order["id"].as_str().expect("order id").to_string());
    }
    for id in &order_ids {
        api.wait_for_status(&user_token, id, "completed").await;
    }

    // Refused at reservation: not enough stock (409), and a product that does not exist.
    let (code, body) = api.place_order(&user_token, &scarce_id, 5).await;
    assert_eq!(code, 409, "insufficient stock: {body}");
    let (code, body) = api
        .place_order(&user_token, "0123456789abcdef01234567", 1)
        .await;
    assert!(
        (400..500).contains(&code),
        "unknown product must be refused: {code} {body}"
    );

    let cancelled = cancel_one_order(api, &user_token, &product_id).await;

    // Repeated reads of one order: the first may miss the cache, the rest hit it.
    let order_id = order_ids[0].clone();
    for _ in 0..5 {
        api.expect(
            Method::GET,
            &format!("/api/orders/{order_id}"),
            Some(&user_token),
            None,
            200,
        )
        .await;
    }
    api.expect(Method::GET, "/api/orders", Some(&user_token), None, 200)
        .await;
    api.expect(Method::GET, "/no/such/route", None, None, 404)
        .await;
    api.expect(Method::GET, "/ready", None, None, 200).await;

    Fed {
        user_token,
        order_id,
        product_id,
        cancelled,
    }
}

/// Cancels an order, which only works while it is pending. The worker is woken by the queue
/// send inside the create request, so a single order is usually processed before its 201 even
/// reaches us. A burst of orders queues up behind the batch the worker is busy with, and the
/// cancels sent the moment each order is accepted win for the orders at the back. Returns
/// whether any cancel succeeded (a 409 only means the worker won that race).
pub async fn cancel_one_order(api: &Api, token: &str, product_id: &str) -> bool {
    const BURST: usize = 30;
    for round in 1..=3 {
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..BURST {
            let (api, token, product_id) = (api.clone(), token.to_string(), product_id.to_string());
            racers.spawn(async move {
                let (code, order) = api.place_order(&token, &product_id, 1).await;
                assert_eq!(code, 201, "place order: {order}");
                let path = format!(
                    "/api/orders/{}/cancel",
                    order["id"].as_str().expect("order id")
                );
                let (code, body) = api
                    .call(Method::POST, &path, Some(&token), Some(&json!({})))
                    .await;
                assert!(code == 200 || code == 409, "cancel answered {code}: {body}");
                code == 200
            });
        }
        let mut won = 0;
        while let Some(outcome) = racers.join_next().await {
            won += usize::from(outcome.expect("cancel racer"));
        }
        if won > 0 {
            println!("observability: {won} of {BURST} orders cancelled in round {round}");
            return true;
        }
    }
    false
}

/// A little of everything, a few times a second, until `stop`: keeps every `rate()` window fed
/// while the test waits for scrapes and runs its queries.
pub async fn trickle_traffic(api: Api, fed: Fed, stop: Arc<AtomicBool>) {
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) {
        api.call(Method::GET, "/api/products", None, None).await;
        let path = format!("/api/orders/{}", fed.order_id);
        api.call(Method::GET, &path, Some(&fed.user_token), None)
            .await;
        api.call(Method::GET, "/api/orders", Some("garbage"), None)
            .await;
        api.place_order(&fed.user_token, &fed.product_id, 1).await;
        if round % 4 == 0 {
            // Answers are not checked here: the burst already asserted each flow, and a login
            // throttle may rightly refuse a steady stream of logins.
            let body = json!({"email": SEED_USER.0, "password": SEED_USER.1});
            api.call(Method::POST, "/api/auth/login", None, Some(&body))
                .await;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
