//! Scale-out on the real backends: two `api` and two `worker` processes share one FerretDB
//! (MongoDB protocol), one redis-server and one moto (SQS, SES). A few hundred orders go in
//! through both APIs at once, some of them competing for a product that sells out. Then every
//! accepted order must be completed exactly once, each customer must get exactly one email per
//! order, and the stock must add up to what was there minus what was sold.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;
use serial_test::serial;

const CUSTOMERS: usize = 10;
const ORDERS_PER_CUSTOMER: usize = 20;
const PLENTY: i64 = 100_000;
/// Less than the orders ask for in all, so it sells out under contention.
const SCARCE: i64 = 50;

/// Sums a counter over every series of it in a Prometheus text page.
fn counter_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[serial(heavy)]
async fn two_apis_and_two_workers_complete_every_order_exactly_once() {
    if !support::backends_required()
        && (support::find_binary("FERRETDB_BIN", "ferretdb", "see scripts/test").is_none()
            || support::find_binary("MOTO_SERVER_BIN", "moto_server", "see scripts/test").is_none()
            || support::find_binary("REDIS_SERVER_BIN", "redis-server", "see scripts/test")
                .is_none())
    {
        eprintln!("SKIPPED: scale-out needs the real backend servers");
        return;
    }
    let real = Arc::new(blocking(RealBackends::start).await);
    // One environment (same JWT secrets, so a token from one API works on the other).
    let mut base = ServerEnv::fresh();
    base.real = Some(real.clone());
    let env_for = |extra: &[(&str, &str)]| {
        let mut env = base.clone();
        env.extra = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env
    };
    // The first API seeds the empty database; the rest start on it.
    let api1 = TestServer::start(env_for(&[]), "api").await;
    let api2 = TestServer::start(env_for(&[]), "api").await;
    let worker1 = TestServer::start(env_for(&[("METRICS_PORT", "0")]), "worker").await;
    let worker2 = TestServer::start(env_for(&[("METRICS_PORT", "0")]), "worker").await;
    let apis = [&api1, &api2];

    let admin = api1.login_admin().await;
    let plenty = api1
        .create_product(&admin, &unique("Plenty"), 250, PLENTY)
        .await;
    let scarce = api2
        .create_product(&admin, &unique("Scarce"), 990, SCARCE)
        .await;
    let (plenty_id, scarce_id) = (str_of(&plenty["id"]), str_of(&scarce["id"]));

    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        customers.push(apis[i % 2].new_user().await);
    }

    // Every customer orders concurrently, alternating between the two APIs.
    let placed = join_all(customers.iter().enumerate().map(|(c, customer)| {
        let (plenty_id, scarce_id) = (plenty_id.clone(), scarce_id.clone());
        async move {
            let mut accepted: Vec<(String, i64, i64)> = Vec::new();
            let mut sold_out = 0;
            for n in 0..ORDERS_PER_CUSTOMER {
                let api = apis[(c + n) % 2];
                let plenty_qty = 1 + (n % 3) as i64;
                let scarce_qty = if n % 2 == 0 { 1 } else { 0 };
                let mut lines = vec![(plenty_id.as_str(), plenty_qty)];
                if scarce_qty > 0 {
                    lines.push((scarce_id.as_str(), scarce_qty));
                }
                let r = api.place_order_raw(customer, &order_body(&lines)).await;
                match r.status {
                    201 => accepted.push((str_of(&r.json()["id"]), plenty_qty, scarce_qty)),
                    409 => {
                        assert_problem(&r, 409, "insufficient_stock");
                        sold_out += 1;
                    }
                    other => panic!("unexpected {other} placing an order: {}", r.ctx()),
                }
            }
            (accepted, sold_out)
        }
    }))
    .await;

    let accepted: Vec<(usize, String, i64, i64)> = placed
        .iter()
        .enumerate()
        .flat_map(|(c, (orders, _))| orders.iter().map(move |(id, p, s)| (c, id.clone(), *p, *s)))
        .collect();
    let sold_out: usize = placed.iter().map(|(_, s)| s).sum();
    let scarce_sold: i64 = accepted.iter().map(|(_, _, _, s)| s).sum();
    let plenty_sold: i64 = accepted.iter().map(|(_, _, p, _)| p).sum();
    assert!(
        sold_out > 0,
        "the scarce product should have sold out under contention"
    );
    assert_eq!(
        scarce_sold, SCARCE,
        "the scarce product sells exactly its stock, never more"
    );

    // Every accepted order completes (read through either API).
    for (i, (c, id, _, _)) in accepted.iter().enumerate() {
        let order = apis[i % 2]
            .poll_order_status(&customers[*c], id, "completed")
            .await;
        assert_eq!(order["status"], "completed");
    }

    // Stock adds up on both products.
    assert_eq!(api2.product_stock(&plenty_id).await, PLENTY - plenty_sold);
    assert_eq!(api1.product_stock(&scarce_id).await, 0);

    // Exactly one email per order, to its customer.
    let count_emails = || async {
        let mut per_order: HashMap<String, usize> = HashMap::new();
        for email in real.moto.sent_emails().await {
            if let Some((_, id, _, _)) = accepted
                .iter()
                .find(|(_, id, _, _)| email.subject.contains(id.as_str()))
            {
                *per_order.entry(id.clone()).or_default() += 1;
            }
        }
        per_order
    };
    let emails_per_order = poll_until(
        Duration::from_secs(30),
        "one SES email per completed order",
        || async {
            let per_order = count_emails().await;
            if per_order.len() == accepted.len() {
                Ok(per_order)
            } else {
                Err(format!(
                    "{} of {} orders emailed",
                    per_order.len(),
                    accepted.len()
                ))
            }
        },
    )
    .await;
    let twice: Vec<_> = emails_per_order.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "orders emailed more than once: {twice:?}");
    for (c, id, _, _) in &accepted {
        let raw = sent_emails_for(&real, id, "completed").await;
        assert_eq!(raw.len(), 1);
        assert!(
            raw[0].contains(customers[*c].email.as_str()),
            "email of {id} not addressed to its customer"
        );
    }

    // Completed exactly once across the two workers, as their own metrics count it.
    let mut completed = 0.0;
    for worker in [&worker1, &worker2] {
        let page = worker.get("/metrics", None).await;
        page.assert_status(200);
        completed += counter_total(&page.text, "orders_completed_total");
    }
    assert_eq!(
        completed as usize,
        accepted.len(),
        "orders completed by the workers, counted once each"
    );
}
