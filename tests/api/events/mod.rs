//! Order status as server-sent events: `GET /api/orders/{id}/events` and `GET /api/orders/events`,
//! followed the way a client follows them (an HTTP stream read frame by frame), in the
//! topologies the service runs in: one `serve` process; `api` and `worker` processes on the
//! embedded store (the api process reads the store) and, with `TEST_BACKENDS=real` or in
//! `topologies`, on FerretDB, redis-server and moto (Redis pub/sub, and without Redis the store).

mod client;
mod one_order;
mod per_user;
mod topologies;

use crate::harness::*;

/// A server for following orders: an admin, a customer, and a product with ample stock.
pub struct Shop {
    pub admin: Auth,
    pub customer: Auth,
    pub product: String,
}

pub async fn shop(srv: &TestServer) -> Shop {
    let admin = srv.login_admin().await;
    let customer = srv.new_user().await;
    let product = srv
        .create_product(&admin, &unique("Followed"), 500, 100_000)
        .await;
    Shop {
        admin,
        customer,
        product: str_of(&product["id"]),
    }
}

/// A `worker` process on `api`'s data and backends, to move its pending orders.
pub async fn worker_for(api: &TestServer) -> TestServer {
    TestServer::start(
        api.env.clone().with_vars(&[("METRICS_PORT", "0")]),
        "worker",
    )
    .await
}

#[tokio::test]
async fn both_streams_are_in_the_openapi_document_as_event_streams() {
    let srv = TestServer::serve().await;
    let doc = srv.get("/api-docs/openapi.json", None).await.json();
    for path in ["/api/orders/{id}/events", "/api/orders/events"] {
        let op = &doc["paths"][path]["get"];
        assert!(
            op["responses"]["200"]["content"]["text/event-stream"].is_object(),
            "{path}: {op}"
        );
        assert!(
            op["security"].as_array().is_some_and(|s| !s.is_empty()),
            "{path}"
        );
        let params = op["parameters"].as_array().expect("parameters");
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "Last-Event-ID" && p["in"] == "header"),
            "{path}: {params:?}"
        );
        for status in ["400", "401"] {
            assert!(op["responses"][status].is_object(), "{path} lacks {status}");
        }
    }
}
