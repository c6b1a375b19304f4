//! One trace per order, proven against a real Jaeger (v1.75.0, the v2 binary; `scripts/test`
//! installs it): the service exports OTLP/HTTP to it and the test reads the trace back through
//! Jaeger's query HTTP API, as an SRE would in its UI.
//!
//! Without the `jaeger` binary each test prints SKIPPED and passes, unless `REQUIRE_BACKENDS=1`.

mod jaeger_api;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::harness::support::jaeger::{self, Jaeger};
use crate::harness::*;
use jaeger_api::{fetch_trace, wait_for_spans, Trace};

/// Spans reach Jaeger within the batch delay set below plus Jaeger's own batching.
const TRACE_DEADLINE: Duration = Duration::from_secs(20);

/// A client's own span: the service's request span must be its child.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-{CLIENT_SPAN}-01")
}

/// A fresh random trace id, so tests sharing one Jaeger never read each other's traces.
fn new_trace_id() -> String {
    random_hex(32)
}

fn random_hex(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap())
        .collect()
}

/// The variables that point a process at `jaeger`, with a short batch delay so a test does not
/// wait out the 5 s default.
fn otel_vars(jaeger: &Jaeger) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), jaeger.otlp_endpoint()),
        ("OTEL_SERVICE_NAME".into(), "order-service-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]
}

fn with_otel(mut env: ServerEnv, jaeger: &Jaeger) -> ServerEnv {
    env.extra.extend(otel_vars(jaeger));
    env
}

async fn start_jaeger() -> Option<Arc<Jaeger>> {
    blocking(jaeger::start).await.map(Arc::new)
}

/// Places one order as the seeded customer, as a client that sends its own `traceparent`;
/// returns the order id and the trace id the response names.
async fn place_traced_order(server: &TestServer, trace_id: &str) -> (String, Resp) {
    let auth = server.login(SEED_USER_EMAIL, SEED_USER_PASSWORD).await;
    let r = post_traced_order(server, &auth, trace_id).await;
    let order_id = r.json()["id"].as_str().unwrap().to_string();
    server
        .poll_order_status(&auth, &order_id, "completed")
        .await;
    (order_id, r)
}

/// `POST /api/orders` of one seeded product with the client's `traceparent`; asserts 201.
async fn post_traced_order(server: &TestServer, auth: &Auth, trace_id: &str) -> Resp {
    let products = server.get("/api/products?limit=1", None).await.json();
    let product = products["data"][0]["id"].as_str().unwrap().to_string();
    let rb = server
        .request(Method::POST, "/api/orders")
        .bearer_auth(&auth.access)
        .header("traceparent", client_traceparent(trace_id))
        .json(&order_body(&[(&product, 1)]));
    let r = server.send(rb).await;
    r.assert_status(201);
    r
}

/// The response names the trace the client started.
fn assert_trace_headers(r: &Resp, trace_id: &str) {
    assert_eq!(
        r.header("x-trace-id").as_deref(),
        Some(trace_id),
        "{}",
        r.ctx()
    );
    let traceresponse = r.header("traceresponse").unwrap_or_default();
    assert!(
        traceresponse.starts_with(&format!("00-{trace_id}-")),
        "traceresponse {traceresponse:?}; {}",
        r.ctx()
    );
}

/// The relations of one order's trace, from the request through the queue to the email.
fn assert_order_trace(trace: &Trace, store: &str, email: &str) {
    let request = trace.span("POST /api/orders");
    assert_eq!(
        request.parent.as_deref(),
        Some(CLIENT_SPAN),
        "the request span's parent is the client's span; trace: {trace:#?}"
    );
    assert_eq!(request.tag("http.route"), Some("/api/orders"));
    assert_eq!(request.tag("http.response.status_code"), Some("201"));
    let reserve = format!("reserve_stock {store}");
    let insert = format!("insert_order {store}");
    trace.assert_below(&reserve, "POST /api/orders");
    trace.assert_below(&insert, "POST /api/orders");
    trace.assert_below("send orders", "POST /api/orders");
    assert_eq!(trace.span(&insert).tag("db.system.name"), Some(store));
    assert_eq!(
        trace.span(&insert).tag("db.operation.name"),
        Some("insert_order")
    );
    assert_eq!(trace.span("send orders").tag("span.kind"), Some("producer"));
    // The worker joins the sender's trace through the context in the message.
    trace.assert_child("receive orders", "send orders");
    assert_eq!(
        trace.span("receive orders").tag("span.kind"),
        Some("consumer")
    );
    trace.assert_child("process orders", "receive orders");
    for transition in [
        "order pending -> processing",
        "order processing -> completed",
    ] {
        trace.assert_below(transition, "process orders");
    }
    trace.assert_below(email, "process orders");
}

fn order_span_names<'a>(store: &'a str, email: &'a str) -> Vec<String> {
    vec![
        "POST /api/orders".into(),
        format!("reserve_stock {store}"),
        format!("insert_order {store}"),
        "send orders".into(),
        "receive orders".into(),
        "process orders".into(),
        "order pending -> processing".into(),
        "order processing -> completed".into(),
        email.into(),
    ]
}

async fn wait_for_order_trace(jaeger: &Jaeger, trace_id: &str, store: &str, email: &str) -> Trace {
    let names = order_span_names(store, email);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_for_spans(&jaeger.query_url(), trace_id, &names, TRACE_DEADLINE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_on_serve_is_one_trace_from_request_to_email() {
    let Some(jaeger) = start_jaeger().await else {
        return;
    };
    let env = with_otel(ServerEnv::embedded(&[("LOG_FORMAT", "json")]), &jaeger);
    let server = TestServer::start(env, "serve").await;
    let trace_id = new_trace_id();
    let (_, r) = place_traced_order(&server, &trace_id).await;
    assert_trace_headers(&r, &trace_id);

    let trace = wait_for_order_trace(&jaeger, &trace_id, "sqlite", "mail file write").await;
    assert_order_trace(&trace, "sqlite", "mail file write");
    assert_eq!(
        trace.span("send orders").tag("messaging.system"),
        Some("sqlite_queue")
    );

    // The request's JSON log line carries the ids of its span.
    let request = trace.span("POST /api/orders");
    let output = server.output();
    let line: Value = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.strip_prefix("[stdout] ")?).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("POST /api/orders 201"))
        })
        .unwrap_or_else(|| panic!("no request log line; output:\n{output}"));
    assert_eq!(line["trace_id"], Value::from(trace_id.as_str()), "{line}");
    assert_eq!(
        line["span_id"],
        Value::from(request.span_id.as_str()),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial_test::serial(heavy)]
async fn api_and_worker_on_the_real_backends_make_one_trace() {
    let Some(jaeger) = start_jaeger().await else {
        return;
    };
    let Some(real) = blocking(RealBackends::start_if_installed).await else {
        return;
    };
    let mut env = with_otel(ServerEnv::embedded(&[]), &jaeger);
    env.real = Some(Arc::new(real));
    let api = TestServer::start(env.clone(), "api").await;
    let _worker = TestServer::start(env.with_vars(&[("METRICS_PORT", "0")]), "worker").await;
    let trace_id = new_trace_id();
    let (_, r) = place_traced_order(&api, &trace_id).await;
    assert_trace_headers(&r, &trace_id);

    let trace =
        wait_for_order_trace(&jaeger, &trace_id, "mongodb", "SES.SendBulkTemplatedEmail").await;
    assert_order_trace(&trace, "mongodb", "SES.SendBulkTemplatedEmail");
    assert_eq!(
        trace.span("send orders").tag("messaging.system"),
        Some("aws_sqs")
    );
    assert_eq!(
        trace.span("SES.SendBulkTemplatedEmail").tag("rpc.service"),
        Some("SES")
    );
}

/// Orders that wait for a worker are taken in one receive: its span is a child of the first
/// order's send and links the send span of every other order in the batch, so each of their
/// traces can be followed to the receive that took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_receive_links_the_send_of_every_other_order_it_took() {
    const ORDERS: usize = 3;
    let Some(jaeger) = start_jaeger().await else {
        return;
    };
    let env = with_otel(ServerEnv::embedded(&[]), &jaeger);
    // No worker yet: the orders wait in the queue together.
    let api = TestServer::start(env.clone(), "api").await;
    let auth = api.login(SEED_USER_EMAIL, SEED_USER_PASSWORD).await;
    let mut sent = Vec::new();
    for _ in 0..ORDERS {
        let trace_id = new_trace_id();
        let r = post_traced_order(&api, &auth, &trace_id).await;
        sent.push((trace_id, str_of(&r.json()["id"])));
    }
    // One poll of up to ten messages, so the waiting orders arrive in one receive.
    let worker_env = env.with_vars(&[("METRICS_PORT", "0"), ("WORKER_CONCURRENCY", "10")]);
    let _worker = TestServer::start(worker_env, "worker").await;
    for (_, id) in &sent {
        api.poll_order_status(&auth, id, "completed").await;
    }

    // Every send, and the receive in one of the traces (the worker exports after the API).
    let query_url = jaeger.query_url();
    let sends: Vec<(String, String, Trace)> =
        poll_until(TRACE_DEADLINE, "the sends and the batch's receive", || {
            let (query_url, sent) = (&query_url, &sent);
            async move {
                let mut sends = Vec::new();
                for (trace_id, _) in sent {
                    let trace = fetch_trace(query_url, trace_id).await?;
                    let send = trace
                        .named("send orders")
                        .ok_or("no send yet")?
                        .span_id
                        .clone();
                    sends.push((trace_id.clone(), send, trace));
                }
                if sends
                    .iter()
                    .any(|(_, _, t)| t.named("receive orders").is_some())
                {
                    Ok(sends)
                } else {
                    Err("no receive yet".to_string())
                }
            }
        })
        .await;
    let receivers: Vec<&(String, String, Trace)> = sends
        .iter()
        .filter(|(_, _, t)| t.named("receive orders").is_some())
        .collect();
    let [(first_trace, _, trace)] = receivers.as_slice() else {
        panic!(
            "expected the batch's receive in exactly one order's trace, found it in {}",
            receivers.len()
        );
    };
    trace.assert_child("receive orders", "send orders");
    let mut links = trace.span("receive orders").links.clone();
    links.sort();
    let mut others: Vec<(String, String)> = sends
        .iter()
        .filter(|(t, _, _)| t != first_trace)
        .map(|(t, s, _)| (t.clone(), s.clone()))
        .collect();
    others.sort();
    assert_eq!(
        links, others,
        "the receive links the send span of each other order in its batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_call_is_an_error_span() {
    let Some(jaeger) = start_jaeger().await else {
        return;
    };
    let server = TestServer::start(with_otel(ServerEnv::embedded(&[]), &jaeger), "serve").await;
    let auth = server.login(SEED_USER_EMAIL, SEED_USER_PASSWORD).await;
    // The mail directory becomes a file: every email write now fails.
    let mail_dir = server.env.mail_dir();
    std::fs::remove_dir_all(&mail_dir).unwrap();
    std::fs::write(&mail_dir, b"not a directory").unwrap();

    let trace_id = new_trace_id();
    post_traced_order(&server, &auth, &trace_id).await;

    let trace = wait_for_spans(
        &jaeger.query_url(),
        &trace_id,
        &["process orders", "mail file write"],
        TRACE_DEADLINE,
    )
    .await;
    let write = trace.span("mail file write");
    assert!(
        write.is_error(),
        "the failed write is an error span: {write:#?}"
    );
    assert_eq!(write.tag("error.type"), Some("unavailable"), "{write:#?}");
    trace.assert_below("mail file write", "process orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_traceparent_is_the_parent_of_the_request_span() {
    let Some(jaeger) = start_jaeger().await else {
        return;
    };
    // Quiet logs do not switch the traces off.
    let env = ServerEnv::embedded(&[("RUST_LOG", "warn")]);
    let server = TestServer::start(with_otel(env, &jaeger), "serve").await;
    let trace_id = new_trace_id();
    let rb = server
        .request(Method::GET, "/api/products?limit=2")
        .header("traceparent", client_traceparent(&trace_id))
        .header("tracestate", "client=1");
    let r = server.send(rb).await;
    r.assert_status(200);
    assert_trace_headers(&r, &trace_id);

    let trace = wait_for_spans(
        &jaeger.query_url(),
        &trace_id,
        &["GET /api/products", "list_products sqlite"],
        TRACE_DEADLINE,
    )
    .await;
    let request = trace.span("GET /api/products");
    assert_eq!(request.parent.as_deref(), Some(CLIENT_SPAN), "{trace:#?}");
    assert_eq!(request.tag("span.kind"), Some("server"));
    trace.assert_child("list_products sqlite", "GET /api/products");
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced() {
    let server = TestServer::start(ServerEnv::embedded(&[]), "serve").await;
    let rb = server
        .request(Method::GET, "/health")
        .header("traceparent", client_traceparent(CLIENT_TRACE));
    let r = server.send(rb).await;
    r.assert_status(200);
    assert_eq!(r.header("traceresponse"), None, "{}", r.ctx());
    assert_eq!(r.header("x-trace-id"), None, "{}", r.ctx());
}
