//! Placing, reading, listing and cancelling orders; the worker's lifecycle and its emails.

use crate::harness::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Checks an order email: To, Subject, From, Date, multipart/alternative with text and HTML parts
/// naming every product.
fn check_email(raw: &str, to: &str, order_id: &str, product_names: &[&str]) {
    let msg = parse_email(raw);
    let recipients: Vec<&str> = msg
        .to()
        .map(|list| list.iter().filter_map(|a| a.address()).collect())
        .unwrap_or_default();
    assert!(
        recipients.iter().any(|r| r.eq_ignore_ascii_case(to)),
        "To: {recipients:?} lacks {to}:\n{raw}"
    );
    let subject = msg
        .subject()
        .unwrap_or_else(|| panic!("email has no Subject header:\n{raw}"));
    assert!(
        subject.contains(order_id),
        "Subject {subject:?} lacks the order id {order_id}"
    );
    assert!(msg.from().is_some(), "email has no From header:\n{raw}");
    assert!(
        msg.date().is_some(),
        "email has no (valid) Date header:\n{raw}"
    );
    let ct = mime_type(&msg);
    assert!(
        ct == "multipart/alternative" || ct == "multipart/mixed" || ct == "multipart/related",
        "email content type is {ct:?}, want multipart/alternative:\n{raw}"
    );
    assert!(
        raw.to_ascii_lowercase().contains("multipart/alternative"),
        "no multipart/alternative part:\n{raw}"
    );
    let parts = leaf_parts(&msg);
    let text = parts
        .iter()
        .find(|(ct, _)| ct == "text/plain")
        .unwrap_or_else(|| panic!("no text/plain part:\n{raw}"));
    let html = parts
        .iter()
        .find(|(ct, _)| ct == "text/html")
        .unwrap_or_else(|| panic!("no text/html part:\n{raw}"));
    for name in product_names {
        assert!(
            text.1.contains(name),
            "text/plain part does not name {name:?}:\n{}",
            text.1
        );
        assert!(
            html.1.contains(name),
            "text/html part does not name {name:?}:\n{}",
            html.1
        );
    }
}

fn item<'a>(order: &'a Value, product_id: &str) -> &'a Value {
    order["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|it| it["productId"] == json!(product_id))
        .unwrap_or_else(|| panic!("order has no line for {product_id}: {order}"))
}

async fn list_orders(srv: &TestServer, auth: &Auth, query: &str) -> Value {
    let r = srv
        .get(&format!("/api/orders{query}"), Some(&auth.access))
        .await;
    r.assert_status(200);
    let body = r.json();
    assert_eq!(
        object_keys(&body),
        keys(&["data", "page", "limit", "total", "totalPages"]),
        "{}",
        r.ctx()
    );
    for o in body["data"].as_array().expect("data array") {
        assert_order(o);
        assert_eq!(
            o["userId"],
            auth.user["id"],
            "listed an order of someone else: {}",
            r.ctx()
        );
    }
    body
}

fn order_ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| str_of(&o["id"]))
        .collect()
}

/// register → login → browse → order → worker completes it → email → list → cancel on an
/// API-only server → stock back.
#[tokio::test]
async fn full_flow() {
    let srv = TestServer::serve().await;
    let admin = srv.login_admin().await;

    // A customer registers and logs in.
    let email = unique_email();
    let reg = srv
        .register(&email, "flow-password-1", "Flow Customer")
        .await;
    let customer = srv.login(&email, "flow-password-1").await;
    assert_eq!(customer.user, reg.user);

    // The admin stocks two products; the customer sees them in the catalogue.
    let widget_name = unique("Flow Widget");
    let gizmo_name = unique("Flow Gizmo");
    let widget = srv.create_product(&admin, &widget_name, 1999, 10).await;
    let gizmo = srv.create_product(&admin, &gizmo_name, 250, 5).await;
    let widget_id = str_of(&widget["id"]);
    let gizmo_id = str_of(&gizmo["id"]);
    let r = srv
        .get("/api/products?limit=100", Some(&customer.access))
        .await;
    r.assert_status(200);
    let catalogue = r.json();
    for id in [&widget_id, &gizmo_id] {
        assert!(
            catalogue["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"] == json!(id)),
            "product {id} not in the catalogue: {}",
            r.ctx()
        );
    }

    // The customer orders.
    let body = json!({
        "items": [{"productId": widget_id, "quantity": 2}, {"productId": gizmo_id, "quantity": 3}],
        "shippingAddress": {"street": "221B Baker Street", "city": "London", "state": "Greater London", "zipCode": "NW1 6XE", "country": "UK"},
        "paymentMethod": "paypal",
    });
    let r = srv.place_order_raw(&customer, &body).await;
    r.assert_status(201);
    let order = r.json();
    assert_order(&order);
    let order_id = str_of(&order["id"]);
    assert_eq!(
        r.header("location"),
        Some(format!("/api/orders/{order_id}")),
        "{}",
        r.ctx()
    );
    assert_eq!(order["status"], json!("pending"));
    assert_eq!(order["userId"], customer.user["id"]);
    assert_eq!(order["shippingAddress"], body["shippingAddress"]);
    assert_eq!(order["paymentMethod"], json!("paypal"));
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    let w = item(&order, &widget_id);
    assert_eq!(w["productName"], json!(widget_name));
    assert_eq!(w["unitPrice"], json!(1999));
    assert_eq!(w["quantity"], json!(2));
    assert_eq!(w["lineTotal"], json!(3998));
    let g = item(&order, &gizmo_id);
    assert_eq!(g["productName"], json!(gizmo_name));
    assert_eq!(g["unitPrice"], json!(250));
    assert_eq!(g["quantity"], json!(3));
    assert_eq!(g["lineTotal"], json!(750));
    assert_eq!(order["totalAmount"], json!(4748));

    // Stock was reserved at once.
    assert_eq!(srv.product_stock(&widget_id).await, 8);
    assert_eq!(srv.product_stock(&gizmo_id).await, 2);

    // The worker completes it.
    let done = srv
        .poll_order_status(&customer, &order_id, "completed")
        .await;
    assert_eq!(done["items"], order["items"]);
    assert_eq!(done["totalAmount"], order["totalAmount"]);
    assert_eq!(done["createdAt"], order["createdAt"]);
    assert!(!done.as_object().unwrap().contains_key("failureReason"));
    assert!(
        assert_time(&done["updatedAt"], "updatedAt")
            >= assert_time(&order["updatedAt"], "updatedAt")
    );
    // Completion keeps the stock taken.
    assert_eq!(srv.product_stock(&widget_id).await, 8);
    assert_eq!(srv.product_stock(&gizmo_id).await, 2);

    // The customer got an email.
    let raw = srv.find_email_file(&order_id, "completed").await;
    check_email(&raw, &email, &order_id, &[&widget_name, &gizmo_name]);

    // Price and name are snapshots: changing the product does not change the order.
    let r = srv
        .patch(
            &format!("/api/products/{widget_id}"),
            Some(&admin.access),
            &json!({"price": 99999, "name": unique("Renamed Widget")}),
        )
        .await;
    r.assert_status(200);
    let again = srv.get_order(&customer, &order_id).await;
    assert_eq!(
        again["items"], order["items"],
        "order lines changed after a product update"
    );
    assert_eq!(again["totalAmount"], json!(4748));

    // A completed order can not be cancelled.
    let r = srv
        .post(
            &format!("/api/orders/{order_id}/cancel"),
            Some(&customer.access),
            &json!({}),
        )
        .await;
    assert_problem(&r, 409, "invalid_order_state");
    assert_eq!(
        srv.get_order(&customer, &order_id).await["status"],
        json!("completed")
    );

    // A second order; the list is newest first.
    let second = srv.place_order(&customer, &[(&gizmo_id, 1)]).await;
    let second_id = str_of(&second["id"]);
    let page = list_orders(&srv, &customer, "").await;
    assert_eq!(
        order_ids(&page),
        vec![second_id.clone(), order_id.clone()],
        "newest first"
    );
    assert_eq!(page["page"], json!(1));
    assert_eq!(page["limit"], json!(10));
    assert_eq!(page["total"], json!(2));
    assert_eq!(page["totalPages"], json!(1));
    let page = list_orders(&srv, &customer, "?page=2&limit=1").await;
    assert_eq!(order_ids(&page), vec![order_id.clone()]);
    assert_eq!(page["total"], json!(2));
    assert_eq!(page["totalPages"], json!(2));
    srv.poll_order_status(&customer, &second_id, "completed")
        .await;
    srv.find_email_file(&second_id, "completed").await;

    // The admin sees any order; the seeded user sees neither.
    assert_eq!(
        srv.get_order(&admin, &order_id).await["id"],
        json!(order_id)
    );
    let other = srv.login(SEED_USER_EMAIL, SEED_USER_PASSWORD).await;
    let theirs = list_orders(&srv, &other, "?limit=100").await;
    assert!(!order_ids(&theirs).contains(&order_id));
    // The admin's own list is the admin's orders only, too.
    let admins = list_orders(&srv, &admin, "?limit=100").await;
    assert!(
        !order_ids(&admins).contains(&order_id),
        "GET /api/orders lists another user's order for the admin"
    );

    // An order that stays pending: API-only server (no worker), then cancel it.
    let api = TestServer::api().await;
    let api_admin = api.login_admin().await;
    let buyer = api.new_user().await;
    let lamp_name = unique("Cancel Lamp");
    let lamp = api.create_product(&api_admin, &lamp_name, 4500, 5).await;
    let lamp_id = str_of(&lamp["id"]);
    let pending = api.place_order(&buyer, &[(&lamp_id, 3)]).await;
    let pending_id = str_of(&pending["id"]);
    assert_eq!(api.product_stock(&lamp_id).await, 2);
    assert_eq!(
        api.get_order(&buyer, &pending_id).await["status"],
        json!("pending")
    );

    let r = api
        .post(
            &format!("/api/orders/{pending_id}/cancel"),
            Some(&buyer.access),
            &json!({}),
        )
        .await;
    r.assert_status(200);
    let cancelled = r.json();
    assert_order(&cancelled);
    assert_eq!(cancelled["status"], json!("cancelled"));
    assert_eq!(cancelled["id"], json!(pending_id));
    assert_eq!(cancelled["items"], pending["items"]);
    assert_eq!(
        api.product_stock(&lamp_id).await,
        5,
        "cancelling returns the stock"
    );
    assert_eq!(
        api.get_order(&buyer, &pending_id).await["status"],
        json!("cancelled")
    );
    let raw = api.find_email_file(&pending_id, "cancelled").await;
    check_email(&raw, &buyer.email, &pending_id, &[&lamp_name]);
}

#[tokio::test]
async fn cancel_rules() {
    let srv = TestServer::api().await;
    let admin = srv.login_admin().await;
    let owner = srv.new_user().await;
    let stranger = srv.new_user().await;
    let p = srv
        .create_product(&admin, &unique("Cancelable"), 100, 10)
        .await;
    let pid = str_of(&p["id"]);
    let order = srv.place_order(&owner, &[(&pid, 4)]).await;
    let id = str_of(&order["id"]);
    let path = format!("/api/orders/{id}/cancel");

    // Someone else's order: 404 exactly like a missing one, and nothing changes.
    let r = srv.post(&path, Some(&stranger.access), &json!({})).await;
    let theirs = assert_problem(&r, 404, "not_found");
    let r = srv
        .post(
            "/api/orders/ffffffffffffffffffffffff/cancel",
            Some(&stranger.access),
            &json!({}),
        )
        .await;
    let missing = assert_problem(&r, 404, "not_found");
    assert_eq!(without_instance(theirs), without_instance(missing));
    assert_eq!(srv.product_stock(&pid).await, 6);
    let r = srv.post(&path, None, &json!({})).await;
    assert_problem(&r, 401, "unauthorized");
    assert_eq!(srv.get_order(&owner, &id).await["status"], json!("pending"));

    // The owner cancels once; a second cancel is a state conflict and returns nothing twice.
    let r = srv
        .send(srv.request(Method::POST, &path).bearer_auth(&owner.access))
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["status"], json!("cancelled"));
    assert_eq!(srv.product_stock(&pid).await, 10);
    let r = srv.post(&path, Some(&owner.access), &json!({})).await;
    assert_problem(&r, 409, "invalid_order_state");
    assert_eq!(
        srv.product_stock(&pid).await,
        10,
        "a refused cancel must not return stock again"
    );
    srv.find_email_file(&id, "cancelled").await;

    // The admin may read it.
    assert_eq!(
        srv.get_order(&admin, &id).await["status"],
        json!("cancelled")
    );
}

#[tokio::test]
async fn reads_are_private_and_lists_page() {
    let srv = TestServer::api().await;
    let admin = srv.login_admin().await;
    let alice = srv.new_user().await;
    let bob = srv.new_user().await;
    let p = srv
        .create_product(&admin, &unique("Listed"), 300, 100)
        .await;
    let pid = str_of(&p["id"]);

    let mut placed = vec![];
    for q in 1..=3 {
        placed.push(str_of(&srv.place_order(&alice, &[(&pid, q)]).await["id"]));
    }
    let bobs = str_of(&srv.place_order(&bob, &[(&pid, 1)]).await["id"]);

    // Newest first, own orders only.
    let page = list_orders(&srv, &alice, "").await;
    let newest_first: Vec<String> = placed.iter().rev().cloned().collect();
    assert_eq!(order_ids(&page), newest_first);
    assert_eq!(page["total"], json!(3));
    let page = list_orders(&srv, &bob, "").await;
    assert_eq!(order_ids(&page), vec![bobs.clone()]);
    assert_eq!(page["total"], json!(1));

    // Paging and caps.
    let page = list_orders(&srv, &alice, "?page=1&limit=2").await;
    assert_eq!(order_ids(&page), newest_first[..2].to_vec());
    assert_eq!(
        (
            page["page"].clone(),
            page["limit"].clone(),
            page["totalPages"].clone()
        ),
        (json!(1), json!(2), json!(2))
    );
    let page = list_orders(&srv, &alice, "?page=2&limit=2").await;
    assert_eq!(order_ids(&page), newest_first[2..].to_vec());
    let page = list_orders(&srv, &alice, "?page=3&limit=2").await;
    assert_eq!(page["data"], json!([]));
    let page = list_orders(&srv, &alice, "?limit=500").await;
    assert_eq!(page["limit"], json!(100));
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    for (q, fields) in [
        ("?page=0", &["page"][..]),
        ("?page=-1", &["page"]),
        ("?page=abc", &["page"]),
        ("?limit=0", &["limit"]),
        ("?limit=abc", &["limit"]),
        ("?page=0&limit=0", &["page", "limit"]),
    ] {
        let r = srv
            .get(&format!("/api/orders{q}"), Some(&alice.access))
            .await;
        assert_validation(&r, fields);
    }
    let r = srv.get("/api/orders", None).await;
    assert_problem(&r, 401, "unauthorized");

    // Someone else's order is exactly as invisible as a missing one.
    let r = srv
        .get(&format!("/api/orders/{bobs}"), Some(&alice.access))
        .await;
    let hidden = assert_problem(&r, 404, "not_found");
    let r = srv
        .get("/api/orders/ffffffffffffffffffffffff", Some(&alice.access))
        .await;
    let missing = assert_problem(&r, 404, "not_found");
    assert_eq!(
        without_instance(hidden.clone()),
        without_instance(missing),
        "another user's order leaks through 404 body"
    );
    for k in ["code", "title", "detail", "type", "status"] {
        assert!(
            !hidden[k].to_string().contains(&bobs),
            "404 body mentions the order id"
        );
    }
    let r = srv.get(&format!("/api/orders/{bobs}"), None).await;
    assert_problem(&r, 401, "unauthorized");

    // Owner and admin read it.
    assert_eq!(srv.get_order(&bob, &bobs).await["userId"], bob.user["id"]);
    assert_eq!(srv.get_order(&admin, &bobs).await["userId"], bob.user["id"]);
}

#[tokio::test]
async fn order_validation_and_stock_checks() {
    let srv = TestServer::api().await;
    let admin = srv.login_admin().await;
    let user = srv.new_user().await;
    let plenty = srv
        .create_product(&admin, &unique("Plenty"), 100, 2000)
        .await;
    let few_name = unique("Few");
    let few = srv.create_product(&admin, &few_name, 200, 1).await;
    let some_name = unique("Some");
    let some = srv.create_product(&admin, &some_name, 300, 2).await;
    let (plenty_id, few_id, some_id) = (
        str_of(&plenty["id"]),
        str_of(&few["id"]),
        str_of(&some["id"]),
    );
    let unknown = "ffffffffffffffffffffffff";

    // Unknown products are named.
    let r = srv
        .place_order_raw(&user, &order_body(&[(&plenty_id, 1), (unknown, 1)]))
        .await;
    let body = assert_problem(&r, 404, "product_not_found");
    assert_eq!(body["productIds"], json!([unknown]), "{}", r.ctx());

    // Every short line is listed, and nothing is reserved from any line.
    let r = srv
        .place_order_raw(
            &user,
            &order_body(&[(&few_id, 5), (&plenty_id, 10), (&some_id, 3)]),
        )
        .await;
    let body = assert_problem(&r, 409, "insufficient_stock");
    let mut shortages = body["shortages"]
        .as_array()
        .unwrap_or_else(|| panic!("no shortages: {}", r.ctx()))
        .clone();
    shortages.sort_by_key(|s| s["productId"].as_str().unwrap_or("").to_string());
    let mut want = vec![
        json!({"productId": few_id, "productName": few_name, "requested": 5, "available": 1}),
        json!({"productId": some_id, "productName": some_name, "requested": 3, "available": 2}),
    ];
    want.sort_by_key(|s| s["productId"].as_str().unwrap().to_string());
    assert_eq!(shortages, want, "{}", r.ctx());
    assert_eq!(srv.product_stock(&plenty_id).await, 2000);
    assert_eq!(srv.product_stock(&few_id).await, 1);
    assert_eq!(srv.product_stock(&some_id).await, 2);

    // Exactly the available stock is fine.
    let o = srv.place_order(&user, &[(&few_id, 1), (&some_id, 2)]).await;
    assert_eq!(o["totalAmount"], json!(800));
    assert_eq!(srv.product_stock(&few_id).await, 0);
    assert_eq!(srv.product_stock(&some_id).await, 0);
    let r = srv
        .place_order_raw(&user, &order_body(&[(&few_id, 1)]))
        .await;
    let body = assert_problem(&r, 409, "insufficient_stock");
    assert_eq!(
        body["shortages"],
        json!([{"productId": few_id, "productName": few_name, "requested": 1, "available": 0}])
    );

    // Quantity bounds: 1..=1000.
    for (q, ok) in [(0, false), (-1, false), (1001, false), (1000, true)] {
        let r = srv
            .place_order_raw(&user, &order_body(&[(&plenty_id, q)]))
            .await;
        if ok {
            r.assert_status(201);
        } else {
            assert_validation(&r, &["items[0].quantity"]);
        }
    }
    assert_eq!(srv.product_stock(&plenty_id).await, 1000);
    let r = srv
        .place_order_raw(&user, &order_body(&[(&plenty_id, 1), (&some_id, 0)]))
        .await;
    assert_validation(&r, &["items[1].quantity"]);
    let r = srv
        .place_order_raw(&user, &order_body(&[(&plenty_id, 1), ("not-an-id", 1)]))
        .await;
    assert_validation(&r, &["items[1].productId"]);

    // Item count bounds: 1..=100.
    let r = srv.place_order_raw(&user, &order_body(&[])).await;
    assert_validation(&r, &["items"]);
    let many: Vec<(&str, i64)> = (0..101).map(|_| (plenty_id.as_str(), 1)).collect();
    let r = srv.place_order_raw(&user, &order_body(&many)).await;
    assert_validation(&r, &["items"]);

    // Address parts and payment method.
    let mut body = order_body(&[(&plenty_id, 1)]);
    body["shippingAddress"]
        .as_object_mut()
        .unwrap()
        .remove("zipCode");
    let r = srv.place_order_raw(&user, &body).await;
    assert_validation(&r, &["shippingAddress.zipCode"]);
    let mut body = order_body(&[(&plenty_id, 1)]);
    body["shippingAddress"]["city"] = json!("  ");
    body["shippingAddress"]["country"] = json!("");
    let r = srv.place_order_raw(&user, &body).await;
    assert_validation(&r, &["shippingAddress.city", "shippingAddress.country"]);
    let mut body = order_body(&[(&plenty_id, 1)]);
    body.as_object_mut().unwrap().remove("shippingAddress");
    let r = srv.place_order_raw(&user, &body).await;
    assert_eq!(r.status, 400, "missing shippingAddress: {}", r.ctx());
    let mut body = order_body(&[(&plenty_id, 1)]);
    body.as_object_mut().unwrap().remove("paymentMethod");
    let r = srv.place_order_raw(&user, &body).await;
    assert_eq!(r.status, 400, "missing paymentMethod: {}", r.ctx());

    // None of the refused orders reserved anything or was stored.
    assert_eq!(srv.product_stock(&plenty_id).await, 1000);
    let page = list_orders(&srv, &user, "?limit=100").await;
    assert_eq!(
        page["total"],
        json!(2),
        "only the two accepted orders exist: {page}"
    );

    // No token.
    let r = srv
        .post("/api/orders", None, &order_body(&[(&plenty_id, 1)]))
        .await;
    assert_problem(&r, 401, "unauthorized");
}

#[tokio::test]
async fn concurrent_orders_never_oversell() {
    let srv = TestServer::api().await;
    let admin = srv.login_admin().await;
    let user = srv.new_user().await;
    let p = srv.create_product(&admin, &unique("Scarce"), 1000, 5).await;
    let pid = str_of(&p["id"]);

    let body = order_body(&[(&pid, 1)]);
    let attempts = (0..12).map(|_| srv.place_order_raw(&user, &body));
    let results = join_all(attempts).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    for r in results.iter().filter(|r| r.status != 201) {
        assert_problem(r, 409, "insufficient_stock");
    }
    assert_eq!(created, 5, "exactly the stock can be sold");
    assert_eq!(srv.product_stock(&pid).await, 0);
    let page = list_orders(&srv, &user, "?limit=100").await;
    assert_eq!(page["total"], json!(5));
}

/// Customer and product names are user input: in the HTML part they arrive escaped, so a name
/// can not inject markup into the customer's mail client; the text part keeps them as written.
#[tokio::test]
async fn names_in_the_html_email_are_escaped() {
    let srv = TestServer::serve().await;
    let admin = srv.login_admin().await;
    let email = unique_email();
    let customer_name = "Ann <b>Bold</b> & \"Quoted\"";
    srv.register(&email, "escape-password-1", customer_name)
        .await;
    let customer = srv.login(&email, "escape-password-1").await;
    let product_name = unique("Mug <script>alert('x')</script>");
    let product = srv.create_product(&admin, &product_name, 500, 3).await;
    let order = srv
        .place_order(&customer, &[(&str_of(&product["id"]), 1)])
        .await;
    let order_id = str_of(&order["id"]);
    srv.poll_order_status(&customer, &order_id, "completed")
        .await;

    let raw = srv.find_email_file(&order_id, "completed").await;
    let msg = parse_email(&raw);
    let parts = leaf_parts(&msg);
    let part = |ct: &str| {
        parts
            .iter()
            .find(|(t, _)| t == ct)
            .map(|(_, body)| body.clone())
            .unwrap_or_else(|| panic!("no {ct} part:\n{raw}"))
    };
    let (text, html) = (part("text/plain"), part("text/html"));
    assert!(
        !html.contains("<script>") && !html.contains("<b>Bold</b>"),
        "the HTML part carries the names' markup unescaped:\n{html}"
    );
    assert!(
        html.contains("&lt;script&gt;")
            && html.contains("&lt;b&gt;Bold&lt;")
            && html.contains(" &amp; "),
        "the HTML part lacks the escaped names:\n{html}"
    );
    assert!(
        text.contains(&product_name) && text.contains(customer_name),
        "the text part should keep the names as written:\n{text}"
    );
}

/// A finished order is served from the cache as the bytes stored there: the same JSON as the
/// store's answer, with its JSON content type, to its owner and an admin only.
#[tokio::test]
async fn a_cached_order_reads_as_the_stored_one_and_only_by_its_owner() {
    let srv = TestServer::serve().await;
    let admin = srv.login_admin().await;
    let (alice, bob) = (srv.new_user().await, srv.new_user().await);
    let pid = str_of(&srv.create_product(&admin, &unique("Cached"), 300, 10).await["id"]);
    let id = str_of(&srv.place_order(&alice, &[(&pid, 2)]).await["id"]);
    srv.poll_order_status(&alice, &id, "completed").await;

    let path = format!("/api/orders/{id}");
    let mut reads: Vec<Resp> = Vec::new();
    for who in [&alice, &alice, &admin] {
        reads.push(srv.get(&path, Some(&who.access)).await);
    }
    for r in &reads {
        r.assert_status(200);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json"),
            "{}",
            r.ctx()
        );
        assert_eq!(r.json(), reads[0].json(), "every read shows the same order");
    }
    let order = reads[0].json();
    assert_eq!(order["status"], json!("completed"));
    assert_eq!(order["userId"], alice.user["id"]);
    assert_eq!(order["items"][0]["quantity"], json!(2));
    let r = srv.get(&path, Some(&bob.access)).await;
    assert_problem(&r, 404, "not_found");
}
