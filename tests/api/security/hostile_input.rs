//! Hostile input: oversized, malformed or malicious bodies are refused with problem+json, and
//! honest Unicode survives the round trip.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

async fn post_raw(
    srv: &TestServer,
    path: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Resp {
    let rb = srv
        .request(Method::POST, path)
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body);
    srv.send(rb).await
}

/// An order body of exactly `size` bytes, padded with an unknown field (which is ignored).
fn order_of_size(product: &str, size: usize) -> Vec<u8> {
    let mut body = order_body(&[(product, 1)]);
    body["padding"] = json!("");
    let base = body.to_string().len();
    assert!(size >= base);
    body["padding"] = json!("x".repeat(size - base));
    let bytes = body.to_string().into_bytes();
    assert_eq!(bytes.len(), size);
    bytes
}

fn address(street: &str, city: &str, state: &str, zip: &str, country: &str) -> Value {
    json!({"street": street, "city": city, "state": state, "zipCode": zip, "country": country})
}

#[tokio::test]
async fn hostile_input_is_refused_and_honest_unicode_survives() {
    let srv = TestServer::start(ServerEnv::fresh().with_vars(&[]), "api").await;
    let admin = srv.login_admin().await;
    let pid = str_of(
        &srv.create_product(&admin, &unique("Target"), 250, 1000)
            .await["id"],
    );
    let user = srv.new_user().await;
    let json_ct = "application/json";

    // Body size: exactly 1 MiB is accepted, one byte more is 413.
    const LIMIT: usize = 1024 * 1024;
    let r = post_raw(
        &srv,
        "/api/orders",
        &user.access,
        json_ct,
        order_of_size(&pid, LIMIT),
    )
    .await;
    r.assert_status(201);
    let r = post_raw(
        &srv,
        "/api/orders",
        &user.access,
        json_ct,
        order_of_size(&pid, LIMIT + 1),
    )
    .await;
    assert_problem(&r, 413, "payload_too_large");

    // Item counts and quantities: 100 lines pass (merged into one), 101 do not.
    let lines = |n: usize, q: i64| vec![(pid.as_str(), q); n];
    let r = srv
        .place_order_raw(&user, &order_body(&lines(100, 1)))
        .await;
    r.assert_status(201);
    assert_eq!(r.json()["items"][0]["quantity"], json!(100));
    let r = srv
        .place_order_raw(&user, &order_body(&lines(101, 1)))
        .await;
    assert_validation(&r, &["items"]);
    for bad in [0, -1, 1001, i64::MAX] {
        let r = srv
            .place_order_raw(&user, &order_body(&[(&pid, bad)]))
            .await;
        assert_validation(&r, &["items[0].quantity"]);
    }

    // Names: 10,000 characters, or control characters (log and header injection), are refused.
    let huge = "n".repeat(10_000);
    let hostile_names = [
        huge.as_str(),
        "Ann\nBcc: everyone@example.com",
        "Ann\r\nX-Injected: 1",
        "Ann\u{0}Lee",
        "\u{1b}[31mred\u{1b}[0m",
        "tab\tbed",
    ];
    for name in hostile_names {
        let r = srv
            .register_raw(&unique_email(), "correct horse battery", name)
            .await;
        assert_validation(&r, &["name"]);
        let r = srv
            .create_product_raw(&admin, &json!({"name": name, "price": 1, "stock": 1}))
            .await;
        assert_validation(&r, &["name"]);
        let mut body = order_body(&[(&pid, 1)]);
        body["shippingAddress"]["city"] = json!(name);
        let r = srv.place_order_raw(&user, &body).await;
        assert_validation(&r, &["shippingAddress.city"]);
    }

    // Honest non-ASCII text is accepted and comes back intact.
    let name = "Zoë Ñandú-Łukasz 🚀";
    let r = srv
        .register_raw(&unique_email(), "correct horse battery", name)
        .await;
    r.assert_status(201);
    let zoe = TestServer::parse_auth(&r, "", "");
    assert_eq!(srv.me(&zoe.access).await.json()["name"], json!(name));
    let product_name = "Café ☕ 東京 — naïve";
    let cafe = srv
        .create_product_raw(
            &admin,
            &json!({"name": product_name, "description": "Ünïcödé ✓", "price": 450, "stock": 5}),
        )
        .await;
    cafe.assert_status(201);
    let cafe = cafe.json();
    let cafe_id = str_of(&cafe["id"]);
    assert_eq!(srv.get_product(&cafe_id).await["name"], json!(product_name));
    let addr = address("Straße 5 🏠", "Zürich", "Île-de-France", "75001", "Česko");
    let mut body = order_body(&[(&cafe_id, 1)]);
    body["shippingAddress"] = addr.clone();
    let r = srv.place_order_raw(&zoe, &body).await;
    r.assert_status(201);
    let id = str_of(&r.json()["id"]);
    let stored = srv.get_order(&zoe, &id).await;
    assert_eq!(stored["shippingAddress"], addr);
    assert_eq!(stored["items"][0]["productName"], json!(product_name));

    // Wrong content types are 415, whatever the body.
    let good = order_body(&[(&pid, 1)]).to_string().into_bytes();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        let r = post_raw(&srv, "/api/orders", &user.access, ct, good.clone()).await;
        assert_problem(&r, 415, "unsupported_media_type");
    }
    let rb = srv
        .request(Method::POST, "/api/orders")
        .bearer_auth(&user.access)
        .body(good);
    assert_problem(&srv.send(rb).await, 415, "unsupported_media_type");

    // Unknown fields are ignored (documented), including ones that try to set what only the
    // service decides: status, owner, prices, totals.
    let mut sneaky = order_body(&[(&pid, 2)]);
    sneaky["status"] = json!("completed");
    sneaky["userId"] = admin.user["id"].clone();
    sneaky["totalAmount"] = json!(1);
    sneaky["discount"] = json!(100);
    sneaky["items"][0]["unitPrice"] = json!(1);
    sneaky["items"][0]["productName"] = json!("Free stuff");
    let r = srv.place_order_raw(&user, &sneaky).await;
    r.assert_status(201);
    let o = r.json();
    assert_order(&o);
    assert_eq!(o["status"], json!("pending"));
    assert_eq!(o["userId"], user.user["id"]);
    assert_eq!(o["items"][0]["unitPrice"], json!(250));
    assert_ne!(o["items"][0]["productName"], json!("Free stuff"));
    assert_eq!(o["totalAmount"], json!(500));
}
