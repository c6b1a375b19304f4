//! The public catalogue and its admin-only maintenance.

use std::collections::BTreeSet;

use crate::harness::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn list(srv: &TestServer, query: &str) -> (Resp, Value) {
    let r = srv.get(&format!("/api/products{query}"), None).await;
    r.assert_status(200);
    let body = r.json();
    assert_eq!(
        object_keys(&body),
        keys(&["data", "page", "limit", "total", "totalPages"]),
        "{}",
        r.ctx()
    );
    for p in body["data"].as_array().expect("data array") {
        assert_product(p);
    }
    (r, body)
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| str_of(&p["id"]))
        .collect()
}

#[tokio::test]
async fn public_catalogue_lists_and_pages() {
    let srv = TestServer::serve().await;

    // Public: no token needed. The seed has several products.
    let (r, first) = list(&srv, "").await;
    assert_eq!(first["page"], json!(1), "{}", r.ctx());
    assert_eq!(first["limit"], json!(10), "{}", r.ctx());
    let total = first["total"].as_u64().expect("total");
    assert!(
        total >= 2,
        "the seeded catalogue must have several products: {}",
        r.ctx()
    );
    assert_eq!(
        first["totalPages"].as_u64(),
        Some(total.div_ceil(10)),
        "{}",
        r.ctx()
    );
    assert_eq!(
        first["data"].as_array().unwrap().len() as u64,
        total.min(10),
        "{}",
        r.ctx()
    );
    assert!(
        first["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["stock"].as_i64().unwrap() > 0),
        "the seeded catalogue must have stock: {}",
        r.ctx()
    );

    // Walking pages of size 1 visits every product exactly once.
    let mut seen = BTreeSet::new();
    for page in 1..=total {
        let (r, body) = list(&srv, &format!("?page={page}&limit=1")).await;
        assert_eq!(body["page"], json!(page), "{}", r.ctx());
        assert_eq!(body["limit"], json!(1), "{}", r.ctx());
        assert_eq!(body["total"], json!(total), "{}", r.ctx());
        assert_eq!(body["totalPages"], json!(total), "{}", r.ctx());
        let page_ids = ids(&body);
        assert_eq!(page_ids.len(), 1, "{}", r.ctx());
        assert!(
            seen.insert(page_ids[0].clone()),
            "product {} listed twice: {}",
            page_ids[0],
            r.ctx()
        );
    }
    // Past the end: empty data, still 200.
    let (r, body) = list(&srv, &format!("?page={}&limit=1", total + 1)).await;
    assert_eq!(body["data"], json!([]), "{}", r.ctx());
    assert_eq!(body["total"], json!(total), "{}", r.ctx());

    // The limit is capped at 100.
    let (r, body) = list(&srv, "?limit=500").await;
    assert_eq!(body["limit"], json!(100), "{}", r.ctx());
    assert_eq!(
        body["data"].as_array().unwrap().len() as u64,
        total.min(100)
    );

    // Bad paging values.
    for (q, field) in [
        ("?page=0", "page"),
        ("?page=-1", "page"),
        ("?page=abc", "page"),
        ("?limit=0", "limit"),
        ("?limit=-5", "limit"),
        ("?limit=ten", "limit"),
    ] {
        let r = srv.get(&format!("/api/products{q}"), None).await;
        assert_validation(&r, &[field]);
    }
    let r = srv.get("/api/products?page=0&limit=0", None).await;
    assert_validation(&r, &["page", "limit"]);

    // One product by id equals its list entry.
    let listed = first["data"][0].clone();
    let id = str_of(&listed["id"]);
    assert_eq!(srv.get_product(&id).await, listed);

    // Unknown but well-formed id: 404; malformed id: 400 naming `id`.
    let r = srv
        .get("/api/products/ffffffffffffffffffffffff", None)
        .await;
    assert_problem(&r, 404, "not_found");
    for bad in [
        "abc",
        "zzzzzzzzzzzzzzzzzzzzzzzz",
        "12345678901234567890123",
        "1234567890123456789012345",
    ] {
        let r = srv.get(&format!("/api/products/{bad}"), None).await;
        assert_validation(&r, &["id"]);
    }
}

#[tokio::test]
async fn admin_creates_and_patches_products() {
    let srv = TestServer::serve().await;
    let admin = srv.login_admin().await;
    let (_, before) = list(&srv, "").await;
    let total_before = before["total"].as_u64().unwrap();

    let name = unique("Gadget");
    let r = srv
        .create_product_raw(
            &admin,
            &json!({"name": name, "description": "A fine gadget", "price": 1999, "stock": 7}),
        )
        .await;
    r.assert_status(201);
    let p = r.json();
    assert_product(&p);
    assert_eq!(p["name"], json!(name));
    assert_eq!(p["description"], json!("A fine gadget"));
    assert_eq!(p["price"], json!(1999));
    assert_eq!(p["stock"], json!(7));
    let id = str_of(&p["id"]);
    assert_eq!(
        srv.get_product(&id).await,
        p,
        "GET answers what POST created"
    );
    let (_, after) = list(&srv, "").await;
    assert_eq!(
        after["total"].as_u64(),
        Some(total_before + 1),
        "the new product is counted"
    );

    // description and stock are optional.
    let r = srv
        .create_product_raw(&admin, &json!({"name": unique("Bare"), "price": 0}))
        .await;
    r.assert_status(201);
    assert_product(&r.json());

    // PATCH each field alone; others stay.
    let r = srv
        .patch(
            &format!("/api/products/{id}"),
            Some(&admin.access),
            &json!({"price": 2499}),
        )
        .await;
    r.assert_status(200);
    let p2 = r.json();
    assert_product(&p2);
    assert_eq!(p2["price"], json!(2499));
    assert_eq!(p2["name"], p["name"]);
    assert_eq!(p2["description"], p["description"]);
    assert_eq!(p2["stock"], p["stock"]);
    assert_eq!(p2["createdAt"], p["createdAt"]);
    assert!(
        assert_time(&p2["updatedAt"], "updatedAt") >= assert_time(&p["updatedAt"], "updatedAt")
    );

    let new_name = unique("Renamed");
    let r = srv
        .patch(
            &format!("/api/products/{id}"),
            Some(&admin.access),
            &json!({"name": new_name, "description": "Now better", "stock": 42}),
        )
        .await;
    r.assert_status(200);
    let p3 = r.json();
    assert_eq!(p3["name"], json!(new_name));
    assert_eq!(p3["description"], json!("Now better"));
    assert_eq!(p3["stock"], json!(42));
    assert_eq!(p3["price"], json!(2499));
    assert_eq!(
        srv.get_product(&id).await,
        p3,
        "GET answers the patched product"
    );

    // Validation.
    let r = srv
        .create_product_raw(
            &admin,
            &json!({"name": unique("Neg"), "price": -1, "stock": 1}),
        )
        .await;
    assert_validation(&r, &["price"]);
    let r = srv
        .create_product_raw(
            &admin,
            &json!({"name": unique("Neg"), "price": 1, "stock": -1}),
        )
        .await;
    assert_validation(&r, &["stock"]);
    let r = srv
        .create_product_raw(
            &admin,
            &json!({"name": unique("Neg"), "price": -5, "stock": -5}),
        )
        .await;
    assert_validation(&r, &["price", "stock"]);
    let r = srv
        .create_product_raw(&admin, &json!({"name": "   ", "price": 100}))
        .await;
    assert_validation(&r, &["name"]);
    let r = srv
        .create_product_raw(&admin, &json!({"description": "no name", "price": 100}))
        .await;
    assert_eq!(r.status, 400, "missing name: {}", r.ctx());
    let r = srv
        .create_product_raw(&admin, &json!({"name": unique("NoPrice")}))
        .await;
    assert_eq!(r.status, 400, "missing price: {}", r.ctx());
    let r = srv
        .patch(
            &format!("/api/products/{id}"),
            Some(&admin.access),
            &json!({"price": -1}),
        )
        .await;
    assert_validation(&r, &["price"]);
    let r = srv
        .patch(
            &format!("/api/products/{id}"),
            Some(&admin.access),
            &json!({"stock": -3}),
        )
        .await;
    assert_validation(&r, &["stock"]);
    assert_eq!(
        srv.get_product(&id).await,
        p3,
        "refused patches changed nothing"
    );

    // Unknown and malformed ids on PATCH.
    let r = srv
        .patch(
            "/api/products/ffffffffffffffffffffffff",
            Some(&admin.access),
            &json!({"price": 1}),
        )
        .await;
    assert_problem(&r, 404, "not_found");
    let r = srv
        .patch(
            "/api/products/nope",
            Some(&admin.access),
            &json!({"price": 1}),
        )
        .await;
    assert_validation(&r, &["id"]);
    let (_, end) = list(&srv, "").await;
    assert_eq!(
        end["total"].as_u64(),
        Some(total_before + 2),
        "refused creates created nothing"
    );
}

#[tokio::test]
async fn only_admins_maintain_the_catalogue() {
    let srv = TestServer::serve().await;
    let admin = srv.login_admin().await;
    let user = srv.new_user().await;
    let seeded_user = srv.login(SEED_USER_EMAIL, SEED_USER_PASSWORD).await;
    let p = srv.create_product(&admin, &unique("Locked"), 500, 3).await;
    let id = str_of(&p["id"]);
    let body = json!({"name": unique("Sneaky"), "price": 1, "stock": 1});

    for u in [&user, &seeded_user] {
        let r = srv.post("/api/products", Some(&u.access), &body).await;
        assert_problem(&r, 403, "forbidden");
        let r = srv
            .patch(
                &format!("/api/products/{id}"),
                Some(&u.access),
                &json!({"price": 1}),
            )
            .await;
        assert_problem(&r, 403, "forbidden");
    }

    let r = srv.post("/api/products", None, &body).await;
    assert_problem(&r, 401, "unauthorized");
    let r = srv
        .patch(&format!("/api/products/{id}"), None, &json!({"price": 1}))
        .await;
    assert_problem(&r, 401, "unauthorized");
    let r = srv
        .send(
            srv.request(Method::POST, "/api/products")
                .bearer_auth("garbage")
                .json(&body),
        )
        .await;
    assert_problem(&r, 401, "unauthorized");

    assert_eq!(
        srv.get_product(&id).await,
        p,
        "refused writes changed nothing"
    );
    let (_, all) = list(&srv, "?limit=100").await;
    assert!(
        !all["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == body["name"]),
        "a refused create must not create"
    );
}
