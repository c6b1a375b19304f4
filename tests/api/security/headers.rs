//! Security headers on every answer, and CORS: closed by default, open only to the configured
//! origin.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

fn assert_security_headers(r: &Resp) {
    let want = |name: &str| {
        r.header(name)
            .unwrap_or_else(|| panic!("no {name}: {}", r.ctx()))
    };
    assert_eq!(want("x-content-type-options"), "nosniff", "{}", r.ctx());
    assert_eq!(want("x-frame-options"), "DENY", "{}", r.ctx());
    let csp = want("content-security-policy");
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src"),
        "weak Content-Security-Policy {csp:?}: {}",
        r.ctx()
    );
    let referrer = want("referrer-policy");
    assert!(
        [
            "no-referrer",
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin"
        ]
        .contains(&referrer.as_str()),
        "Referrer-Policy {referrer:?}: {}",
        r.ctx()
    );
}

async fn preflight(srv: &TestServer, origin: &str) -> Resp {
    let rb = srv
        .request(Method::OPTIONS, "/api/orders")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        );
    srv.send(rb).await
}

async fn cross_origin_get(srv: &TestServer, origin: &str) -> Resp {
    let rb = srv
        .request(Method::GET, "/api/products")
        .header("origin", origin);
    srv.send(rb).await
}

#[tokio::test]
async fn every_response_carries_security_headers_and_cors_is_closed_by_default() {
    let srv = TestServer::start(ServerEnv::fresh().with_vars(&[]), "serve").await;
    let user = srv.new_user().await;
    let responses = vec![
        srv.get("/health", None).await,
        srv.get("/api/products", None).await,
        srv.get("/api/auth/me", Some(&user.access)).await,
        srv.get("/api/auth/me", None).await,
        srv.get("/api/orders/not-an-id", Some(&user.access)).await,
        srv.get("/api/orders/0123456789abcdef01234567", Some(&user.access))
            .await,
        srv.post("/api/orders", Some(&user.access), &json!({}))
            .await,
        srv.get("/no/such/route", None).await,
        srv.call(Method::DELETE, "/api/products", None, None).await,
        srv.get("/api-docs/", None).await,
        srv.get("/api-docs/openapi.json", None).await,
        srv.get("/metrics", None).await,
    ];
    let statuses: BTreeSet<u16> = responses.iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&200)
            && statuses.contains(&400)
            && statuses.contains(&401)
            && statuses.contains(&404)
            && statuses.contains(&405),
        "the sample should span 2xx and 4xx: {statuses:?}"
    );
    for r in &responses {
        assert_security_headers(r);
    }

    // No origins configured: a cross-origin page gets no permission at all.
    for r in [
        preflight(&srv, "https://evil.example").await,
        cross_origin_get(&srv, "https://evil.example").await,
    ] {
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "CORS allowed by default: {}",
            r.ctx()
        );
        assert_eq!(r.header("access-control-allow-credentials"), None);
    }
}

#[tokio::test]
async fn cors_allows_only_the_configured_origin() {
    let srv = TestServer::start(
        ServerEnv::fresh().with_vars(&[("CORS_ALLOWED_ORIGINS", "https://shop.example")]),
        "serve",
    )
    .await;
    let r = preflight(&srv, "https://shop.example").await;
    assert!(
        (200..300).contains(&r.status),
        "preflight from the shop: {}",
        r.ctx()
    );
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://shop.example"),
        "{}",
        r.ctx()
    );
    let methods = r
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase();
    assert!(methods.contains("POST"), "allowed methods {methods:?}");
    let r = cross_origin_get(&srv, "https://shop.example").await;
    r.assert_status(200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://shop.example")
    );
    assert_security_headers(&r);

    for origin in [
        "https://evil.example",
        "https://shop.example.evil.example",
        "http://shop.example",
        "null",
    ] {
        for r in [
            preflight(&srv, origin).await,
            cross_origin_get(&srv, origin).await,
        ] {
            let allowed = r.header("access-control-allow-origin");
            assert!(
                allowed.is_none(),
                "origin {origin} was allowed ({allowed:?}): {}",
                r.ctx()
            );
        }
    }
}
