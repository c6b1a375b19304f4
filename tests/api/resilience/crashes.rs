//! No accepted order lost when a process stops: a worker killed mid-order, and SIGTERM in the
//! middle of requests and messages.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_processing_loses_no_order() {
    let env = ServerEnv::embedded(&[]);
    let api = TestServer::start(env.clone(), "api").await;
    // Slow processing and a short visibility timeout: the kill lands mid-order, and the
    // message comes back soon after the dead worker's heartbeat stops.
    let worker_env = env.clone().with_vars(&[
        ("METRICS_PORT", "0"),
        ("ORDER_PROCESSING_TIME", "3s"),
        ("QUEUE_VISIBILITY_TIMEOUT", "2s"),
    ]);
    let mut worker = TestServer::start(worker_env.clone(), "worker").await;

    let admin = api.login_admin().await;
    let pid = str_of(&api.create_product(&admin, &unique("Crash"), 500, 10).await["id"]);
    let user = api.new_user().await;
    let id = str_of(&api.place_order(&user, &[(&pid, 1)]).await["id"]);

    api.poll_order_status(&user, &id, "processing").await;
    worker.kill();
    // Nobody can finish it now: still processing means the kill really came mid-order.
    assert_eq!(
        api.get_order(&user, &id).await["status"],
        json!("processing"),
        "the worker finished before it was killed; the test proves nothing"
    );
    assert!(email_files_of(&env, &id).is_empty());

    let worker2 = TestServer::start(worker_env, "worker").await;
    api.poll_order_status_within(&user, &id, "completed", RECOVERY_DEADLINE)
        .await;
    api.find_email_file(&id, "completed").await;
    assert_eq!(
        email_files_of(&env, &id),
        vec![format!("order-{id}-completed.eml")]
    );
    let page = metrics_page(&worker2).await;
    assert_eq!(
        metric(&page, "emails_sent_total", None),
        1.0,
        "one email sent"
    );
    assert_eq!(metric(&page, "orders_completed_total", None), 1.0);
    assert_eq!(api.product_stock(&pid).await, 9, "stock taken once");
}

/// A `POST /api/orders` sent over a raw connection with its headers and only half its body, so
/// it is in flight (its handler waiting for the rest) for as long as the test wants.
struct HalfSentOrder {
    stream: tokio::net::TcpStream,
    rest: Vec<u8>,
}

impl HalfSentOrder {
    async fn start(srv: &TestServer, auth: &Auth, body: &Value) -> HalfSentOrder {
        let body = body.to_string().into_bytes();
        let head = format!(
            "POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            srv.port,
            auth.access,
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", srv.port))
            .await
            .expect("connect");
        let half = body.len() / 2;
        stream.write_all(head.as_bytes()).await.expect("send head");
        stream.write_all(&body[..half]).await.expect("send half");
        stream.flush().await.expect("flush");
        HalfSentOrder {
            stream,
            rest: body[half..].to_vec(),
        }
    }

    /// Sends the rest of the body; returns the status and body of the answer.
    async fn finish(mut self) -> (u16, String) {
        self.stream
            .write_all(&self.rest)
            .await
            .expect("send the rest of the body: the server dropped an in-flight request");
        let mut raw = Vec::new();
        self.stream
            .read_to_end(&mut raw)
            .await
            .expect("read the answer");
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let status = raw
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer to an in-flight request: {raw:?}"));
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_loses_nothing() {
    const SHUTDOWN_TIMEOUT_SECS: u64 = 10;
    // One receive at a time (WORKER_CONCURRENCY up to 10): while it holds the slow order, the
    // orders placed during the drain stay queued, so the restarted process is the one that
    // completes them and the email count below tells whether any was sent twice.
    let env = ServerEnv::embedded(&[
        ("ORDER_PROCESSING_TIME", "2s"),
        ("SHUTDOWN_TIMEOUT", "10s"),
        ("WORKER_CONCURRENCY", "10"),
    ]);
    let mut srv = TestServer::start(env.clone(), "serve").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Term"), 100, 10).await["id"]);
    let user = srv.new_user().await;

    // One order in the worker's hands ...
    let processing = str_of(&srv.place_order(&user, &[(&pid, 1)]).await["id"]);
    srv.poll_order_status(&user, &processing, "processing")
        .await;
    // ... and three requests in the HTTP server's, each waiting for the rest of its body.
    let body = order_body(&[(&pid, 1)]);
    let mut half_sent = Vec::new();
    for _ in 0..3 {
        half_sent.push(HalfSentOrder::start(&srv, &user, &body).await);
    }
    poll_until(
        ORDER_DEADLINE,
        "the three half-sent requests in flight",
        || async {
            // This scrape is in flight too.
            let n = metric(&metrics_page(&srv).await, "http_requests_in_flight", None);
            if n >= 4.0 {
                Ok(())
            } else {
                Err(format!("{n} in flight"))
            }
        },
    )
    .await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &srv.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");

    // The requests that were in flight are answered in full.
    let mut placed = Vec::new();
    for request in half_sent {
        let (status, body) = request.finish().await;
        assert_eq!(
            status, 201,
            "an in-flight order was not completed at shutdown: {body}"
        );
        let order: Value = serde_json::from_str(&body).expect("order JSON");
        assert_order(&order);
        placed.push(str_of(&order["id"]));
    }

    // The bound is SHUTDOWN_TIMEOUT; a little more for the process to tear down.
    let exit = tokio::task::block_in_place(|| {
        srv.wait_for_exit(Duration::from_secs(SHUTDOWN_TIMEOUT_SECS + 5))
    });
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "no exit within {SHUTDOWN_TIMEOUT_SECS}s of SIGTERM; output:\n{}",
            srv.output()
        )
    });
    assert!(
        exit.success(),
        "exit status after SIGTERM: {exit}; output:\n{}",
        srv.output()
    );
    // The order being processed was finished (and its customer told) before the exit.
    assert_eq!(
        email_files_of(&env, &processing),
        vec![format!("order-{processing}-completed.eml")],
        "the order in processing was not finished before exit"
    );
    let env = srv.stop();

    // Nothing lost: after a restart every order completes, each emailed once.
    let srv = TestServer::start(env.clone(), "serve").await;
    assert_eq!(
        srv.get_order(&user, &processing).await["status"],
        json!("completed")
    );
    for id in &placed {
        srv.poll_order_status(&user, id, "completed").await;
        srv.find_email_file(id, "completed").await;
    }
    let page = metrics_page(&srv).await;
    assert_eq!(
        metric(&page, "emails_sent_total", None),
        placed.len() as f64,
        "the restarted process emails only the orders it completed"
    );
    assert_eq!(srv.product_stock(&pid).await, 10 - 1 - placed.len() as i64);
}

/// A SIGTERM that reaches a process while it starts (here, waiting for a database that never
/// answers) ends it cleanly, exit 0, as one that reaches it while it serves does. Before, the
/// process listened for SIGTERM only once it served, so an orchestrator stopping a process that
/// was still starting killed it by the signal (the chaos campaign's 10-minute run: a worker
/// SIGTERMed milliseconds after its restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_starting_is_a_clean_exit() {
    // Accepts connections (the kernel's backlog) and never answers: the MongoDB handshake waits.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // The driver's own wait for a server (3 s by default here) longer than the test too.
    let uri = format!(
        "mongodb://{}/orders?serverSelectionTimeoutMS=60000",
        black_hole.local_addr().expect("address")
    );
    let env = ServerEnv::embedded(&[
        ("MONGODB_URI", uri.as_str()),
        ("METRICS_PORT", "0"),
        // Longer than the test: the start-up is still waiting when the signal comes (and the
        // hold expiry the configuration requires to be three times as long).
        ("BACKEND_TIMEOUT", "60s"),
        ("STOCK_HOLD_EXPIRY", "3m"),
    ]);
    let mut child = env.spawn_unwaited("worker");
    let pid = child.id();
    // Until the process has a handler for SIGTERM (bit 15 of the caught-signals mask): a
    // signal before that takes the default action whatever the service does.
    poll_until(
        Duration::from_secs(20),
        "the starting process to catch SIGTERM",
        || async {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map_err(|e| e.to_string())?;
            let caught = status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .ok_or("no SigCgt line")?;
            if caught & (1 << (libc::SIGTERM - 1)) != 0 {
                Ok(())
            } else {
                Err(format!(
                    "caught signals {caught:#x}; exited: {:?}",
                    child_exited(pid)
                ))
            }
        },
    )
    .await;
    // Still starting: it never got to serve.
    assert!(child.try_wait().expect("try_wait").is_none());
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let exit = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(exit) = child.try_wait().expect("try_wait") {
                return Some(exit);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let Some(exit) = exit else {
        let _ = child.kill();
        panic!("no exit within 10 s of a SIGTERM while starting");
    };
    assert!(
        exit.success(),
        "exit status after a SIGTERM while starting: {exit}"
    );
    drop(black_hole);
}

/// Whether `pid` has exited (a zombie counts): for the poll's message.
fn child_exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}
