//! Stock held by no order (issue 14 (b)): a reservation whose reply was lost, one cut half-way
//! through its lines, and one whose process was killed before the order was stored each leave
//! stock taken that no order accounts for. Each reservation records its hold on the products,
//! and the hold sweeper gives such stock back once `STOCK_HOLD_EXPIRY` has passed; a stored
//! order's stock stays taken. FerretDB behind the black-hole proxy, which loses one reply.

use super::*;
use crate::harness::support::blackhole::BlackHoleProxy;

/// `BACKEND_TIMEOUT` in these tests, and the hold expiry (the shortest the service takes:
/// three times the timeout).
const TIMEOUT: &str = "2s";
const HOLD_EXPIRY: &str = "6s";

/// The start of an `insert` command on the outbox collection as BSON puts it on the wire:
/// the first write of storing an order, after its stock is reserved.
const INSERT_INTO_OUTBOX: &[u8] = b"\x02insert\x00\x07\x00\x00\x00outbox\x00";

/// The bytes of `_id: ObjectId(id)` in a command: what a reservation's write on that product
/// carries (reads by several ids put them in an array, under other keys).
fn product_filter(id: &str) -> Vec<u8> {
    let oid = bson::oid::ObjectId::parse_str(id).expect("an ObjectId");
    let mut pattern = b"\x07_id\x00".to_vec();
    pattern.extend_from_slice(&oid.bytes());
    pattern
}

/// A service on FerretDB through `proxy`, with the short bounds above.
fn env_through(proxy: &BlackHoleProxy, database: &str) -> ServerEnv {
    let uri = format!("mongodb://127.0.0.1:{}/{database}", proxy.port);
    ServerEnv::embedded(&[
        ("MONGODB_URI", &uri),
        ("BACKEND_TIMEOUT", TIMEOUT),
        ("STOCK_HOLD_EXPIRY", HOLD_EXPIRY),
        ("QUEUE_VISIBILITY_TIMEOUT", "2s"),
    ])
}

/// A service on its own FerretDB behind a black-hole proxy, with an admin and a customer.
struct Shop {
    ferretdb: support::ferretdb::FerretDb,
    proxy: BlackHoleProxy,
    env: ServerEnv,
    srv: TestServer,
    admin: Auth,
    user: Auth,
}

async fn open_shop(database: &str) -> Option<Shop> {
    let ferretdb = blocking(support::ferretdb::start).await?;
    let proxy = BlackHoleProxy::forward_to(([127, 0, 0, 1], ferretdb.port).into());
    let env = env_through(&proxy, &unique(database));
    let srv = TestServer::start(env.clone(), "serve").await;
    let (admin, user) = (srv.login_admin().await, srv.new_user().await);
    Some(Shop {
        ferretdb,
        proxy,
        env,
        srv,
        admin,
        user,
    })
}

impl Shop {
    async fn product(&self, name: &str) -> String {
        let p = self
            .srv
            .create_product(&self.admin, &unique(name), 100, 10)
            .await;
        str_of(&p["id"])
    }
}

async fn wait_for_stock(srv: &TestServer, pid: &str, want: i64) {
    poll_until(RECOVERY_DEADLINE, "the held stock given back", || async {
        match srv.product_stock(pid).await {
            n if n == want => Ok(()),
            n => Err(format!("stock {n}, want {want}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_whose_reply_was_lost_gets_its_stock_back() {
    let Some(shop) = open_shop("heldlost").await else {
        return;
    };
    let (srv, user) = (&shop.srv, &shop.user);
    let pid = shop.product("Held").await;

    // The decrement is applied; its reply never comes, so the order is refused with a 503 and
    // nobody knows the stock was taken.
    shop.proxy.lose_the_reply_to(&product_filter(&pid));
    let r = srv.place_order_raw(user, &order_body(&[(&pid, 3)])).await;
    assert_problem(&r, 503, "service_unavailable");
    // An order placed meanwhile keeps its stock.
    let kept = str_of(&srv.place_order(user, &[(&pid, 1)]).await["id"]);
    srv.poll_order_status_within(user, &kept, "completed", RECOVERY_DEADLINE)
        .await;
    wait_for_stock(srv, &pid, 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_cut_after_some_of_its_lines_gets_them_all_back() {
    let Some(shop) = open_shop("heldcut").await else {
        return;
    };
    let (a, b) = (shop.product("HeldA").await, shop.product("HeldB").await);

    // Lines are taken in id order: the first is taken and answered, the second taken and its
    // reply lost, and `BACKEND_TIMEOUT` cuts the reservation there.
    let last = a.clone().max(b.clone());
    shop.proxy.lose_the_reply_to(&product_filter(&last));
    let body = order_body(&[(&a, 2), (&b, 3)]);
    let r = shop.srv.place_order_raw(&shop.user, &body).await;
    assert_problem(&r, 503, "service_unavailable");
    wait_for_stock(&shop.srv, &a, 10).await;
    wait_for_stock(&shop.srv, &b, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_reserved_by_a_process_killed_before_storing_the_order_comes_back() {
    let Some(mut shop) = open_shop("heldkill").await else {
        return;
    };
    let pid = shop.product("Held").await;

    // The stock is taken; the order's first write hangs (its reply is lost), and the process
    // dies while it waits: no order, and no one left to give the stock back.
    shop.proxy.lose_the_reply_to(INSERT_INTO_OUTBOX);
    shop.proxy.count(INSERT_INTO_OUTBOX);
    let body = order_body(&[(&pid, 3)]);
    let (url, token) = (shop.srv.url("/api/orders"), shop.user.access.clone());
    // Its answer never comes (the process dies): only the stock tells.
    tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
    });
    wait_until_seen(&shop.proxy, "the order's first write").await;
    shop.srv.kill();

    let srv = TestServer::start(shop.env.clone(), "serve").await;
    wait_for_stock(&srv, &pid, 10).await;
    drop(shop.ferretdb);
}
