//! The customer and admin flows the suites build on (register, log in, create products, place
//! and follow orders), each asserting the answer's documented shape on the way.

use std::time::Duration;

use serde_json::{json, Value};

use super::names::unique_email;
use super::poll::poll_until;
use super::response::{all_keys, assert_json_ct, keys, object_keys, Resp};
use super::server::{Auth, TestServer};
use super::shapes::{assert_order, assert_product, assert_user, order_body};
use super::{ADMIN_EMAIL, ADMIN_PASSWORD, ORDER_DEADLINE};

impl TestServer {
    /// Checks the register/login/refresh answer shape and returns it as `Auth`.
    pub fn parse_auth(r: &Resp, email: &str, password: &str) -> Auth {
        assert_json_ct(r);
        let body = r.json();
        assert_eq!(
            object_keys(&body),
            keys(&[
                "user",
                "accessToken",
                "refreshToken",
                "tokenType",
                "expiresIn"
            ]),
            "auth answer fields: {}",
            r.ctx()
        );
        assert_eq!(body["tokenType"], json!("Bearer"), "{}", r.ctx());
        assert!(
            body["expiresIn"].as_u64().is_some_and(|n| n > 0),
            "expiresIn must be a positive integer: {}",
            r.ctx()
        );
        let access = body["accessToken"]
            .as_str()
            .filter(|s| !s.is_empty())
            .expect("accessToken")
            .to_string();
        let refresh = body["refreshToken"]
            .as_str()
            .filter(|s| !s.is_empty())
            .expect("refreshToken")
            .to_string();
        assert_ne!(access, refresh, "access and refresh tokens must differ");
        assert_user(&body["user"]);
        for k in all_keys(&body) {
            let k = k.to_ascii_lowercase();
            assert!(
                !k.contains("password") && !k.contains("hash"),
                "auth answer leaks `{k}`: {}",
                r.ctx()
            );
        }
        Auth {
            access,
            refresh,
            user: body["user"].clone(),
            body,
            email: email.to_string(),
            password: password.to_string(),
        }
    }

    pub async fn register_raw(&self, email: &str, password: &str, name: &str) -> Resp {
        self.post(
            "/api/auth/register",
            None,
            &json!({"email": email, "password": password, "name": name}),
        )
        .await
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Auth {
        let r = self.register_raw(email, password, name).await;
        r.assert_status(201);
        let auth = Self::parse_auth(&r, email, password);
        assert_eq!(
            auth.user["email"],
            json!(email.to_lowercase()),
            "{}",
            r.ctx()
        );
        assert_eq!(auth.user["name"], json!(name), "{}", r.ctx());
        assert_eq!(auth.user["role"], json!("user"), "{}", r.ctx());
        auth
    }

    /// Registers a fresh user with a unique email.
    pub async fn new_user(&self) -> Auth {
        self.register(&unique_email(), "correct horse battery", "Test Customer")
            .await
    }

    pub async fn login_raw(&self, email: &str, password: &str) -> Resp {
        self.post(
            "/api/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Auth {
        let r = self.login_raw(email, password).await;
        r.assert_status(200);
        let auth = Self::parse_auth(&r, email, password);
        assert_eq!(
            auth.user["email"],
            json!(email.to_lowercase()),
            "{}",
            r.ctx()
        );
        auth
    }

    pub async fn login_admin(&self) -> Auth {
        let auth = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(auth.user["role"], json!("admin"), "seeded admin's role");
        auth
    }

    pub async fn me(&self, token: &str) -> Resp {
        self.get("/api/auth/me", Some(token)).await
    }

    // --- products -----------------------------------------------------------------------------

    pub async fn create_product_raw(&self, admin: &Auth, body: &Value) -> Resp {
        self.post("/api/products", Some(&admin.access), body).await
    }

    pub async fn create_product(&self, admin: &Auth, name: &str, price: i64, stock: i64) -> Value {
        let body = json!({"name": name, "description": format!("{name} description"), "price": price, "stock": stock});
        let r = self.create_product_raw(admin, &body).await;
        r.assert_status(201);
        let p = r.json();
        assert_product(&p);
        assert_eq!(p["name"], json!(name), "{}", r.ctx());
        assert_eq!(p["price"], json!(price), "{}", r.ctx());
        assert_eq!(p["stock"], json!(stock), "{}", r.ctx());
        p
    }

    pub async fn get_product(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/products/{id}"), None).await;
        r.assert_status(200);
        assert_json_ct(&r);
        let p = r.json();
        assert_product(&p);
        p
    }

    pub async fn product_stock(&self, id: &str) -> i64 {
        self.get_product(id).await["stock"].as_i64().expect("stock")
    }

    // --- orders -------------------------------------------------------------------------------

    pub async fn place_order_raw(&self, auth: &Auth, body: &Value) -> Resp {
        self.post("/api/orders", Some(&auth.access), body).await
    }

    /// Places an order for `(productId, quantity)` lines with the default address; asserts 201.
    pub async fn place_order(&self, auth: &Auth, lines: &[(&str, i64)]) -> Value {
        let r = self.place_order_raw(auth, &order_body(lines)).await;
        r.assert_status(201);
        assert_json_ct(&r);
        let o = r.json();
        assert_order(&o);
        let id = o["id"].as_str().unwrap();
        assert_eq!(
            r.header("location").as_deref(),
            Some(format!("/api/orders/{id}").as_str()),
            "Location: {}",
            r.ctx()
        );
        assert_eq!(o["status"], json!("pending"), "{}", r.ctx());
        assert_eq!(o["userId"], auth.user["id"], "{}", r.ctx());
        o
    }

    pub async fn get_order(&self, auth: &Auth, id: &str) -> Value {
        let r = self
            .get(&format!("/api/orders/{id}"), Some(&auth.access))
            .await;
        r.assert_status(200);
        assert_json_ct(&r);
        let o = r.json();
        assert_order(&o);
        o
    }

    /// Polls `GET /api/orders/{id}` until the order has `status`; returns it.
    pub async fn poll_order_status(&self, auth: &Auth, id: &str, status: &str) -> Value {
        self.poll_order_status_within(auth, id, status, ORDER_DEADLINE)
            .await
    }

    /// Like `poll_order_status`, with the caller's deadline (for slow paths such as redelivery
    /// after a visibility timeout).
    pub async fn poll_order_status_within(
        &self,
        auth: &Auth,
        id: &str,
        status: &str,
        deadline: Duration,
    ) -> Value {
        poll_until(
            deadline,
            &format!("order {id} to become {status}"),
            || async {
                let r = self
                    .get(&format!("/api/orders/{id}"), Some(&auth.access))
                    .await;
                if r.status != 200 {
                    return Err(r.ctx());
                }
                let o = r.json();
                if o["status"] == json!(status) {
                    Ok(o)
                } else {
                    Err(format!("status {}", o["status"]))
                }
            },
        )
        .await
    }
}
