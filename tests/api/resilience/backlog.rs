//! An overload the service recovers from: with no worker to take them, accepted orders pile up
//! in the queue; past `MAX_QUEUE_BACKLOG` waiting, creations are shed (503 `overloaded`,
//! `Retry-After`, nothing reserved), and once a worker drains the queue they are admitted again.
//! The test asserts what happens, never how fast.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;

const BACKLOG_LIMIT: i64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_are_shed_while_the_backlog_is_full_and_admitted_once_it_drains() {
    const STOCK: i64 = 100;
    let env = ServerEnv::embedded(&[("MAX_QUEUE_BACKLOG", &BACKLOG_LIMIT.to_string())]);
    // API only: nothing takes the orders off the queue until the worker starts below.
    let api = TestServer::start(env.clone(), "api").await;
    let admin = api.login_admin().await;
    let pid = str_of(
        &api.create_product(&admin, &unique("Backlog"), 400, STOCK)
            .await["id"],
    );
    let user = api.new_user().await;
    let body = order_body(&[(&pid, 1)]);

    // The backlog is read at an interval, so a few more than the limit may get in first; keep
    // ordering until one is turned away.
    let mut accepted: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + ORDER_DEADLINE;
    let shed = loop {
        let r = api.place_order_raw(&user, &body).await;
        if r.status != 201 {
            break r;
        }
        accepted.push(str_of(&r.json()["id"]));
        assert!(
            std::time::Instant::now() < deadline,
            "{} orders accepted and none shed with MAX_QUEUE_BACKLOG={BACKLOG_LIMIT}",
            accepted.len()
        );
    };
    assert_problem(&shed, 503, "overloaded");
    let retry = shed.header("retry-after").unwrap_or_default();
    assert!(
        retry.parse::<u64>().is_ok_and(|s| s >= 1),
        "503 without a usable Retry-After ({retry:?}): {}",
        shed.ctx()
    );
    assert!(
        accepted.len() as i64 >= BACKLOG_LIMIT,
        "shed before the backlog reached its bound: {} accepted",
        accepted.len()
    );
    assert_eq!(
        api.product_stock(&pid).await,
        STOCK - accepted.len() as i64,
        "the shed order reserved nothing"
    );
    let page = metrics_page(&api).await;
    assert!(
        metric(&page, "orders_shed_total", Some("reason=\"backlog\"")) >= 1.0,
        "shed orders are counted by reason"
    );
    // Shed answers keep the client's connection: two creations on one keep-alive connection,
    // each body sent after its headers, are both answered 503 on it.
    let mut connection = KeptAlive::open(&api).await;
    for n in 1..=2 {
        let (status, text) = connection.post_order(&api, &user, &body).await;
        assert_eq!(status, 503, "creation {n} on one connection: {text}");
        assert!(text.contains("\"overloaded\""), "creation {n}: {text}");
    }
    assert_eq!(
        api.product_stock(&pid).await,
        STOCK - accepted.len() as i64,
        "the shed orders reserved nothing"
    );

    // A worker drains the queue; creations are admitted again, and nothing accepted was lost.
    let _worker =
        TestServer::start(env.clone().with_vars(&[("METRICS_PORT", "0")]), "worker").await;
    for id in &accepted {
        api.poll_order_status(&user, id, "completed").await;
    }
    let again = poll_until(ORDER_DEADLINE, "an order admitted after the drain", || {
        let (api, user, body) = (&api, &user, &body);
        async move {
            let r = api.place_order_raw(user, body).await;
            match r.status {
                201 => Ok(r),
                _ => Err(format!("still shed: {}", r.ctx())),
            }
        }
    })
    .await;
    let id = str_of(&again.json()["id"]);
    api.poll_order_status(&user, &id, "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_order_tells_its_pollers_when_to_ask_again_and_a_final_one_does_not() {
    let env = ServerEnv::embedded(&[]);
    let api = TestServer::start(env.clone(), "api").await;
    let admin = api.login_admin().await;
    let pid = str_of(&api.create_product(&admin, &unique("Poll"), 400, 10).await["id"]);
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 1)]).await["id"]);

    let pending = api
        .get(&format!("/api/orders/{id}"), Some(&user.access))
        .await;
    pending.assert_status(200);
    assert_eq!(pending.json()["status"], json!("pending"));
    assert_eq!(pending.header("retry-after").as_deref(), Some("1"));

    let _worker =
        TestServer::start(env.clone().with_vars(&[("METRICS_PORT", "0")]), "worker").await;
    api.poll_order_status(&user, &id, "completed").await;
    let done = api
        .get(&format!("/api/orders/{id}"), Some(&user.access))
        .await;
    assert_eq!(done.header("retry-after"), None, "{}", done.ctx());
}

/// One keep-alive connection driven by hand, so a test can see whether the server kept it.
struct KeptAlive {
    stream: BufReader<tokio::net::TcpStream>,
}

impl KeptAlive {
    async fn open(srv: &TestServer) -> KeptAlive {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", srv.port))
            .await
            .expect("connect");
        KeptAlive {
            stream: BufReader::new(stream),
        }
    }

    /// Sends `POST /api/orders` (the headers, then the body in a write of its own) and reads
    /// the answer: its status and body. Panics if the server closed the connection.
    async fn post_order(&mut self, srv: &TestServer, auth: &Auth, body: &Value) -> (u16, String) {
        let body = body.to_string().into_bytes();
        let head = format!(
            "POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            srv.port,
            auth.access,
            body.len()
        );
        let stream = self.stream.get_mut();
        stream
            .write_all(head.as_bytes())
            .await
            .expect("send the headers");
        stream.flush().await.expect("flush");
        stream
            .write_all(&body)
            .await
            .expect("send the body: the server closed the connection");
        let mut status_line = String::new();
        let read = self
            .stream
            .read_line(&mut status_line)
            .await
            .expect("read the status line");
        assert!(read > 0, "the server closed the keep-alive connection");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {status_line:?}"));
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.stream
                .read_line(&mut line)
                .await
                .expect("read a header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("a numeric Content-Length");
                }
            }
        }
        let mut text = vec![0; length];
        self.stream
            .read_exact(&mut text)
            .await
            .expect("read the body");
        (status, String::from_utf8_lossy(&text).into_owned())
    }
}
