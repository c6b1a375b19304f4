//! The FerretDB write lock across processes (issue 12 item 3): a process whose write waits for
//! another process's lease is woken by the release that process announces on Redis, and does
//! not look at the lock document every few milliseconds meanwhile (each look is a command on a
//! server that is already the bound). The test plays the other process: it holds the lock
//! document and renews it, as a live holder does, while an order waits for it.

use bson::{doc, Document};

use super::*;

/// The service's key prefix on Redis (`backends::REDIS_KEY_PREFIX`).
const REDIS_PREFIX: &str = "order-service:";

/// Renewals the test makes while the order waits: a second of holding, at a renewal per 100 ms.
const RENEWALS_WHILE_WAITING: i64 = 10;

/// The lock documents the service's process read (`find` on `locks`), from its `/metrics`.
async fn lock_looks(srv: &TestServer) -> f64 {
    metric(
        &metrics_page(srv).await,
        "mongodb_commands_total",
        Some("collection=\"locks\",command=\"find\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_for_another_process_looks_rarely_and_goes_ahead_on_its_release() {
    let Some(real) = blocking(RealBackends::start_if_installed).await else {
        return;
    };
    let mut env = ServerEnv::embedded(&[]);
    env.extra = real.env();
    // `api` alone: no worker process of the service writes beside the test.
    let srv = TestServer::start(env, "api").await;
    let admin = srv.login_admin().await;
    let pid = str_of(&srv.create_product(&admin, &unique("Locked"), 100, 10).await["id"]);
    let user = srv.new_user().await;

    let direct = mongodb::Client::with_uri_str(real.ferretdb.uri(&real.database))
        .await
        .expect("connect to FerretDB directly");
    let locks = direct
        .database(&real.database)
        .collection::<Document>("locks");
    // Taken as another process, once the service's own lease is given back.
    poll_until(ORDER_DEADLINE, "the lock free to take", || async {
        locks
            .insert_one(doc! { "_id": "writes", "owner": "the-test", "renewals": 0_i64 })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let renewing = {
        let locks = locks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = locks
                    .update_one(
                        doc! { "_id": "writes", "owner": "the-test" },
                        doc! { "$inc": { "renewals": 1 } },
                    )
                    .await;
            }
        })
    };

    let looks_before = lock_looks(&srv).await;
    let body = order_body(&[(&pid, 1)]);
    let holder = async {
        poll_until(
            ORDER_DEADLINE,
            "the order's write to wait for the lock",
            || async {
                match lock_looks(&srv).await - looks_before {
                    n if n > 0.0 => Ok(()),
                    _ => Err("no look at the lock yet".to_string()),
                }
            },
        )
        .await;
        let renewals_at_wait = renewals(&locks).await;
        poll_until(ORDER_DEADLINE, "a second of holding the lock", || async {
            match renewals(&locks).await - renewals_at_wait {
                n if n >= RENEWALS_WHILE_WAITING => Ok(()),
                n => Err(format!("{n} renewals")),
            }
        })
        .await;
        // Released as a process of the service releases it: the document deleted, then
        // announced.
        renewing.abort();
        locks
            .delete_one(doc! { "_id": "writes", "owner": "the-test" })
            .await
            .expect("release the lock");
        announce_release(&real).await;
        std::time::Instant::now()
    };
    let (placed, released_at) = tokio::join!(
        async {
            let placed = srv.place_order_raw(&user, &body).await;
            (placed, std::time::Instant::now())
        },
        holder
    );
    let (placed, answered_at) = placed;
    placed.assert_status(201);
    // A look each 50 ms at most while it waited (WATCH_EVERY), where looking every few
    // milliseconds made a second's wait about two hundred.
    let looks = lock_looks(&srv).await - looks_before;
    // For the reader, not asserted (timings are the benchmarks'): how soon the release woke it.
    eprintln!(
        "{looks} looks at the lock; answered {:?} after the release was announced",
        answered_at.saturating_duration_since(released_at)
    );
    assert!(
        looks <= 3.0 * RENEWALS_WHILE_WAITING as f64,
        "{looks} looks at the lock during a wait of about a second"
    );
}

async fn announce_release(real: &RealBackends) {
    let client = redis::Client::open(real.redis.url()).expect("redis client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let channel = order_service::store::mongo::lock_wakeups::channel(REDIS_PREFIX, &real.database);
    redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("released")
        .query_async::<i64>(&mut connection)
        .await
        .expect("announce the release");
}

async fn renewals(locks: &mongodb::Collection<Document>) -> i64 {
    locks
        .find_one(doc! { "_id": "writes" })
        .await
        .expect("read the lock")
        .and_then(|d| d.get_i64("renewals").ok())
        .unwrap_or(0)
}
