//! Operability: health, readiness, API docs, metrics, request ids and seeding.

use crate::harness::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn health_and_readiness() {
    let srv = TestServer::serve().await;
    assert_eq!(
        srv.output().matches(LISTEN_PREFIX).count(),
        1,
        "the listening line must be printed exactly once:\n{}",
        srv.output()
    );

    let r = srv.get("/health", None).await;
    r.assert_status(200);
    assert!(
        r.content_type().starts_with("application/json"),
        "{}",
        r.ctx()
    );
    assert_eq!(r.json(), json!({"status": "ok"}));

    let r = srv.get("/ready", None).await;
    r.assert_status(200);
    assert!(
        r.content_type().starts_with("application/json"),
        "{}",
        r.ctx()
    );
    assert_eq!(
        r.json(),
        json!({"status": "ready", "checks": {"database": "ok", "queue": "ok", "cache": "ok", "mailer": "ok"}})
    );

    // The API-only process is ready too.
    let api = TestServer::api().await;
    let r = api.get("/ready", None).await;
    r.assert_status(200);
    assert_eq!(r.json()["status"], json!("ready"), "{}", r.ctx());
    let r = api.get("/health", None).await;
    assert_eq!(r.json(), json!({"status": "ok"}));
}

/// `src="…"` / `href="…"` attribute values of an HTML page.
fn attribute_urls(html: &str) -> Vec<String> {
    let mut out = vec![];
    for attr in ["src=", "href="] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let quote = rest.chars().next().unwrap_or(' ');
            let value = if quote == '"' || quote == '\'' {
                rest[1..].split(quote).next().unwrap_or("")
            } else {
                rest.split(|c: char| c.is_whitespace() || c == '>')
                    .next()
                    .unwrap_or("")
            };
            out.push(value.to_string());
        }
    }
    out
}

#[tokio::test]
async fn api_docs_are_served_offline_and_describe_the_api() {
    let srv = TestServer::serve().await;

    // /api-docs may redirect to /api-docs/; either ends at the Swagger UI page.
    let mut r = srv.get("/api-docs", None).await;
    if (300..400).contains(&r.status) {
        let loc = r
            .header("location")
            .unwrap_or_else(|| panic!("redirect without Location: {}", r.ctx()));
        assert!(
            loc == "/api-docs/" || loc.ends_with("/api-docs/") || loc == "api-docs/",
            "{}",
            r.ctx()
        );
        r = srv.get("/api-docs/", None).await;
    }
    r.assert_status(200);
    assert!(r.content_type().starts_with("text/html"), "{}", r.ctx());
    let html = r.text.clone();
    assert!(
        html.to_lowercase().contains("swagger"),
        "not a Swagger UI page: {}",
        r.ctx()
    );
    let slash = srv.get("/api-docs/", None).await;
    slash.assert_status(200);
    assert!(
        slash.content_type().starts_with("text/html"),
        "{}",
        slash.ctx()
    );

    // No external hosts: every script and stylesheet is served by the binary itself.
    let urls = attribute_urls(&slash.text);
    assert!(
        !urls.is_empty(),
        "Swagger UI page references no assets: {}",
        slash.ctx()
    );
    for u in &urls {
        let lower = u.to_lowercase();
        assert!(
            !lower.starts_with("http://")
                && !lower.starts_with("https://")
                && !lower.starts_with("//"),
            "the docs page loads {u} from an external host"
        );
    }
    let lower_html = slash.text.to_lowercase();
    assert!(
        !lower_html.contains("cdn.")
            && !lower_html.contains("unpkg.com")
            && !lower_html.contains("jsdelivr")
    );
    let mut scripts = String::new();
    for u in urls
        .iter()
        .filter(|u| !u.is_empty() && !u.starts_with('#') && !u.starts_with("data:"))
    {
        let path = if u.starts_with('/') {
            u.clone()
        } else {
            format!("/api-docs/{}", u.trim_start_matches("./"))
        };
        let r = srv.get(&path, None).await;
        assert_eq!(r.status, 200, "docs asset {u} is not served: {}", r.ctx());
        if path.ends_with(".js") {
            scripts.push_str(&r.text);
        }
    }
    assert!(
        scripts.contains("/api-docs/openapi.json") || slash.text.contains("/api-docs/openapi.json"),
        "the Swagger UI is not pointed at /api-docs/openapi.json"
    );

    // The OpenAPI document.
    let r = srv.get("/api-docs/openapi.json", None).await;
    r.assert_status(200);
    assert!(
        r.content_type().starts_with("application/json"),
        "{}",
        r.ctx()
    );
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not OpenAPI 3: {}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/api/auth/register", &["post"][..]),
        ("/api/auth/login", &["post"]),
        ("/api/auth/refresh", &["post"]),
        ("/api/auth/logout", &["post"]),
        ("/api/auth/me", &["get"]),
        ("/api/products", &["get", "post"]),
        ("/api/products/{id}", &["get", "patch"]),
        ("/api/orders", &["get", "post"]),
        ("/api/orders/{id}", &["get"]),
        ("/api/orders/{id}/cancel", &["post"]),
        ("/api/orders/{id}/events", &["get"]),
        ("/api/orders/events", &["get"]),
        ("/health", &["get"]),
        ("/ready", &["get"]),
    ] {
        let item = paths.get(path).unwrap_or_else(|| {
            panic!(
                "OpenAPI lacks {path}; it has {:?}",
                paths.keys().collect::<Vec<_>>()
            )
        });
        for m in methods {
            assert!(item.get(*m).is_some(), "OpenAPI {path} lacks {m}: {item}");
        }
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("components.securitySchemes");
    assert!(
        schemes.values().any(|s| s["type"] == json!("http")
            && s["scheme"]
                .as_str()
                .is_some_and(|v| v.eq_ignore_ascii_case("bearer"))),
        "no bearer security scheme: {schemes:?}"
    );
    // Protected operations use it; public ones don't need to.
    assert!(
        paths["/api/orders"]["post"].get("security").is_some() || doc.get("security").is_some(),
        "POST /api/orders declares no security"
    );
}

/// Sum of the samples of one metric (any labels) in Prometheus text.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let metric = series.split('{').next().unwrap_or("");
        if metric == name {
            let v: f64 = value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad sample {line:?}"));
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[tokio::test]
async fn metrics_and_request_ids() {
    let srv = TestServer::serve().await;
    let admin = srv.login_admin().await;
    let user = srv.new_user().await;
    let p = srv
        .create_product(&admin, &unique("Metered"), 100, 10)
        .await;
    let order = srv.place_order(&user, &[(&str_of(&p["id"]), 1)]).await;
    let order_id = str_of(&order["id"]);
    srv.get_order(&user, &order_id).await;
    srv.get("/nope", None).await;

    let r = srv.get("/metrics", None).await;
    r.assert_status(200);
    assert!(r.content_type().starts_with("text/plain"), "{}", r.ctx());
    let http = metric_sum(&r.text, "http_requests_total")
        .unwrap_or_else(|| panic!("no http_requests_total in /metrics:\n{}", r.text));
    assert!(
        http >= 5.0,
        "http_requests_total = {http} after at least 5 requests"
    );
    let created = metric_sum(&r.text, "orders_created_total")
        .unwrap_or_else(|| panic!("no orders_created_total in /metrics:\n{}", r.text));
    assert!(
        created >= 1.0,
        "orders_created_total = {created} after placing an order"
    );
    // Route templates, never raw ids, as labels.
    for line in r.text.lines().filter(|l| l.starts_with("http_request")) {
        assert!(
            !line.contains(&order_id),
            "a metric label carries a raw id: {line}"
        );
    }

    // Counters move.
    srv.place_order(&user, &[(&str_of(&p["id"]), 1)]).await;
    let r2 = srv.get("/metrics", None).await;
    let created2 = metric_sum(&r2.text, "orders_created_total").unwrap();
    assert_eq!(
        created2,
        created + 1.0,
        "orders_created_total counts each order"
    );
    assert!(metric_sum(&r2.text, "http_requests_total").unwrap() > http);

    // X-Request-Id on every response: success, client error, not found, metrics.
    let answers = [
        srv.get("/health", None).await,
        srv.get("/api/products", None).await,
        srv.get("/api/auth/me", None).await,
        srv.get("/nope", None).await,
        srv.post(
            "/api/auth/login",
            None,
            &json!({"email": "x@example.com", "password": "wrong-password"}),
        )
        .await,
        srv.get("/metrics", None).await,
    ];
    let mut ids = std::collections::BTreeSet::new();
    for r in &answers {
        let id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id: {}", r.ctx()));
        assert!(!id.is_empty() && id.len() <= 64, "X-Request-Id {id:?}");
        ids.insert(id);
    }
    assert_eq!(
        ids.len(),
        answers.len(),
        "request ids must be unique per request: {ids:?}"
    );

    // A safe client id is echoed, on success and on error.
    for (path, id) in [
        ("/health", "abc-123"),
        ("/nope", "req_42.trace-XYZ"),
        ("/api/products", &"a".repeat(64)[..]),
    ] {
        let r = srv
            .send(srv.request(Method::GET, path).header("x-request-id", id))
            .await;
        assert_eq!(r.header("x-request-id").as_deref(), Some(id), "{}", r.ctx());
    }
    // An unsafe or oversized one is replaced by a fresh id.
    for bad in [
        "a".repeat(65),
        "has space".to_string(),
        "semi;colon\"quote".to_string(),
    ] {
        let r = srv
            .send(
                srv.request(Method::GET, "/health")
                    .header("x-request-id", bad.clone()),
            )
            .await;
        r.assert_status(200);
        let got = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id: {}", r.ctx()));
        assert_ne!(got, bad, "an unsafe X-Request-Id was echoed");
        assert!(!got.is_empty() && got.len() <= 64);
    }
}

/// Counts of the seeded data visible through the API.
async fn seeded_snapshot(srv: &TestServer) -> (Vec<String>, u64, u64) {
    let r = srv.get("/api/products?limit=100", None).await;
    r.assert_status(200);
    let body = r.json();
    let mut names: Vec<String> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| str_of(&p["name"]))
        .collect();
    names.sort();
    let total = body["total"].as_u64().unwrap();
    let user = srv.login(SEED_USER_EMAIL, SEED_USER_PASSWORD).await;
    assert_eq!(user.user["role"], json!("user"));
    let r = srv.get("/api/orders?limit=100", Some(&user.access)).await;
    r.assert_status(200);
    let orders = r.json()["total"].as_u64().unwrap();
    srv.login_admin().await;
    (names, total, orders)
}

#[tokio::test]
async fn seeding_is_idempotent() {
    // Reference: seeded once.
    let once = ServerEnv::fresh();
    let once2 = once.clone();
    // Seeded twice while no server runs.
    let twice = ServerEnv::fresh();
    let twice2 = twice.clone();
    blocking(move || {
        seed(&once2);
        seed(&twice2);
        seed(&twice2);
    })
    .await;

    let a = TestServer::start(once, "serve").await;
    let b = TestServer::start(twice, "serve").await;
    let (names_a, total_a, orders_a) = seeded_snapshot(&a).await;
    let (names_b, total_b, orders_b) = seeded_snapshot(&b).await;
    assert!(total_a >= 2, "the seed has several products: {names_a:?}");
    assert!(
        orders_a >= 1,
        "the seed has sample orders of the seeded user"
    );
    assert_eq!(
        total_b, total_a,
        "seeding twice duplicated products: {names_b:?}"
    );
    assert_eq!(names_b, names_a);
    let mut dedup = names_b.clone();
    dedup.dedup();
    assert_eq!(
        dedup, names_b,
        "duplicate product names after seeding twice"
    );
    assert_eq!(
        orders_b, orders_a,
        "seeding twice duplicated the sample orders"
    );

    // The dev-mode auto-seed of `serve` on an empty database yields the same data set.
    let c = TestServer::serve().await;
    let (names_c, total_c, orders_c) = seeded_snapshot(&c).await;
    assert_eq!(
        (names_c, total_c, orders_c),
        (names_a.clone(), total_a, orders_a)
    );

    // Seeding again after the server ran (and stopped) still adds nothing.
    let env_b = b.stop();
    let env_b2 = env_b.clone();
    blocking(move || seed(&env_b2)).await;
    let b = TestServer::start(env_b, "serve").await;
    let (names_b, total_b, orders_b) = seeded_snapshot(&b).await;
    assert_eq!((names_b, total_b, orders_b), (names_a, total_a, orders_a));
}
