//! Object-level access on every `{id}` route of the OpenAPI document: another user's objects are
//! answered exactly as objects that do not exist.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

/// The id of an object that belongs to user A, by the route's resource.
fn object_id<'a>(path: &str, order_of_a: &'a str, product: &'a str) -> &'a str {
    if path.starts_with("/api/orders/{id}") {
        order_of_a
    } else if path.starts_with("/api/products/{id}") {
        product
    } else {
        panic!(
            "new route with an id: {path}. Teach this test which object of user A it addresses, \
             so that its object-level access check is tested"
        )
    }
}

/// A body that passes validation, for operations that take one.
fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("post", "/api/products") => Some(json!({"name": "Forbidden", "price": 1, "stock": 1})),
        ("patch", "/api/products/{id}") => Some(json!({"stock": 5})),
        _ => None,
    }
}

#[tokio::test]
async fn other_users_objects_are_invisible_on_every_id_route() {
    // API only: A's order stays pending, so even cancelling it is possible for A.
    let srv = TestServer::start(ServerEnv::fresh().with_vars(&[]), "api").await;
    let admin = srv.login_admin().await;
    let product = str_of(
        &srv.create_product(&admin, &unique("Private"), 100, 10)
            .await["id"],
    );
    let a = srv.new_user().await;
    let b = srv.new_user().await;
    let order_of_a = str_of(&srv.place_order(&a, &[(&product, 1)]).await["id"]);
    let nobodys = "0123456789abcdef01234567";

    let doc = srv.get("/api-docs/openapi.json", None).await;
    doc.assert_status(200);
    let doc = doc.json();
    let mut owner_checks = Vec::new();
    let mut admin_checks = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let other_params: Vec<&str> = path
                .split('/')
                .filter(|s| s.starts_with('{') && *s != "{id}")
                .collect();
            assert!(
                other_params.is_empty(),
                "{method} {path}: path parameters {other_params:?} are unknown to this test"
            );
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if !secured {
                continue; // public (e.g. the catalogue)
            }
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = |id: &str| path.replace("{id}", id);
            let real = if path.contains("{id}") {
                url(object_id(path, &order_of_a, &product))
            } else {
                path.clone()
            };
            let body = body_for(method, path);
            let call = |token: Option<String>, url: String| {
                let (http_method, body) = (http_method.clone(), body.clone());
                let srv = &srv;
                async move {
                    srv.call(http_method, &url, token.as_deref(), body.as_ref())
                        .await
                }
            };

            let r = call(None, real.clone()).await;
            assert_problem(&r, 401, "unauthorized");

            if op["responses"].get("403").is_some() {
                // Admin-only: a user's token is refused outright.
                let r = call(Some(b.access.clone()), real.clone()).await;
                assert_eq!(
                    r.status,
                    403,
                    "{method} {path} with a user token: {}",
                    r.ctx()
                );
                assert_problem(&r, 403, "forbidden");
                admin_checks += 1;
            } else if path.contains("{id}") {
                // Owner-scoped: B sees A's object exactly as an object that does not exist.
                let theirs = call(Some(b.access.clone()), real.clone()).await;
                assert_eq!(
                    theirs.status,
                    404,
                    "{method} {path}: user B reached user A's object: {}",
                    theirs.ctx()
                );
                assert_problem(&theirs, 404, "not_found");
                let missing = call(Some(b.access.clone()), url(nobodys)).await;
                assert_eq!(
                    without_instance(theirs.json()),
                    without_instance(missing.json()),
                    "{method} {path}: another user's object and no object answer differently"
                );
                owner_checks.push((http_method.clone(), real.clone(), body.clone()));
            }
        }
    }
    assert!(
        owner_checks.len() >= 2 && admin_checks >= 2,
        "the document should have owner-scoped and admin routes: {} and {admin_checks}",
        owner_checks.len()
    );
    // Control, after B's attempts: the same calls work for A, so the ids were real and B's
    // attempts changed nothing. Reads first, so the cancel comes last.
    owner_checks.sort_by_key(|(m, _, _)| *m != Method::GET);
    for (method, url, body) in owner_checks {
        if url.ends_with("/events") {
            // A status stream of a pending order stays open: its answer's head is the proof.
            let stream = srv
                .request(method, &url)
                .bearer_auth(&a.access)
                .send()
                .await
                .expect("open the stream");
            assert_eq!(stream.status(), 200, "the owner was refused {url}");
            continue;
        }
        let r = srv.call(method, &url, Some(&a.access), body.as_ref()).await;
        assert!(
            (200..300).contains(&r.status),
            "the owner was refused: {}",
            r.ctx()
        );
    }
}
