//! The store contract, one file per trait (`accounts`, `catalogue`, `orders`, `idempotency`,
//! `health`), written once and run against the embedded store (`SqliteStore` on a fresh SQLite
//! file) and the real one (`MongoStore` on a throwaway FerretDB with a fresh database per test,
//! or on the MongoDB named by `MONGODB_TEST_URI`): `contract_tests!` turns each contract
//! function into a `sqlite::` and a `mongo::` test. The real variants return early, with a
//! SKIPPED line, when FerretDB is not installed. What only MongoDB has is in `mongo_only`.
//!
//! Each contract function takes the [`Stores`] of one backend and says, call by call, which
//! trait it exercises; the helpers below are the setup they share.
//!
//! Times handed to the stores are whole milliseconds: MongoDB keeps no more, and the contract
//! is that what is stored reads back equal.
//!
//! FerretDB 1.x does not apply updates atomically (FerretDB issue #3040); the store notices and
//! sends one write at a time, so the tests of concurrent callers pass on it too. They exercise
//! MongoDB's own atomic updates only when `MONGODB_TEST_URI` names a MongoDB.

use chrono::{DateTime, Utc};
use order_service::domain::{
    Cents, Email, Id, NewProduct, Order, OrderItem, OrderLine, OrderStatus, PageRequest, Product,
    Quantity, Role, ShippingAddress, User,
};
use order_service::store::mongo::MongoStore;
use order_service::store::sqlite::{SqliteDb, SqliteStore};
use order_service::store::{Hold, IdempotencyRecord, ReserveOutcome, Stores, TransitionOutcome};

use crate::support;

/// Generates, for each contract function named, one test on each store.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fixture = $crate::store::Fixture::sqlite();
                    super::$name(fixture.stores.clone()).await;
                }
            )*
        }

        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(fixture) = $crate::store::Fixture::mongo(stringify!($name)).await
                    else {
                        return;
                    };
                    super::$name(fixture.stores.clone()).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

mod accounts;
mod catalogue;
mod health;
mod holds;
mod idempotency;
mod mongo_layout;
mod mongo_only;
mod notifications;
mod orders;
mod write_lock;

// --- Shared setup ---------------------------------------------------------------------------

/// Now, in whole milliseconds.
pub(super) fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("a valid time")
}

pub(super) fn qty(n: u32) -> Quantity {
    Quantity::parse(i64::from(n)).expect("a valid quantity")
}

pub(super) fn line(product_id: Id, n: u32) -> OrderLine {
    OrderLine {
        product_id,
        quantity: qty(n),
    }
}

pub(super) fn user(email: &str) -> User {
    User {
        id: Id::new(),
        email: Email::parse(email).unwrap(),
        name: "Ann".into(),
        role: Role::User,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: now(),
    }
}

pub(super) async fn product(stores: &Stores, name: &str, stock: i64) -> Product {
    product_at(stores, name, stock, now()).await
}

pub(super) async fn product_at(
    stores: &Stores,
    name: &str,
    stock: i64,
    at: DateTime<Utc>,
) -> Product {
    let new = NewProduct {
        name: name.into(),
        description: format!("about {name}"),
        price: Cents::price(250).unwrap(),
        stock,
    };
    stores
        .catalogue
        .insert_product(&new, Id::new(), at)
        .await
        .unwrap()
}

pub(super) async fn stock(stores: &Stores, id: Id) -> i64 {
    stores
        .catalogue
        .find_product(id)
        .await
        .unwrap()
        .expect("product")
        .stock
}

pub(super) fn order_for(user_id: Id, lines: &[(&Product, u32)], at: DateTime<Utc>) -> Order {
    let items = lines
        .iter()
        .map(|(p, n)| OrderItem::new(p.id, p.name.clone(), p.price, qty(*n)))
        .collect();
    let address = ShippingAddress {
        street: "1 Main St".into(),
        city: "Springfield".into(),
        state: "IL".into(),
        zip_code: "62701".into(),
        country: "US".into(),
    };
    Order::place(user_id, items, address, "credit_card".into(), at)
}

/// A hold for a reservation of no order in particular.
pub(super) fn hold() -> Hold {
    Hold::new(Id::new())
}

/// Reserves the lines and stores the order, then forgets the hold, as the order flow does.
pub(super) async fn placed_order(stores: &Stores, lines: &[(&Product, u32)]) -> Order {
    let order_lines: Vec<_> = lines.iter().map(|(p, n)| line(p.id, *n)).collect();
    let mut order = order_for(Id::new(), lines, now());
    let held = Hold::new(order.id);
    order.created_at = held.at;
    let outcome = stores
        .catalogue
        .reserve_stock(&order_lines, &held)
        .await
        .unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Reserved(_)),
        "{outcome:?}"
    );
    stores.orders.insert_order(&order).await.unwrap();
    stores
        .catalogue
        .clear_holds(&[(held, order_lines)])
        .await
        .unwrap();
    order
}

/// One product insert, its outcome as the store answers it.
pub(super) async fn catalogue_probe(
    stores: &Stores,
) -> Result<(), order_service::error::BackendError> {
    let new = NewProduct {
        name: "probe".into(),
        description: "a write".into(),
        price: Cents::price(100).unwrap(),
        stock: 1,
    };
    stores
        .catalogue
        .insert_product(&new, Id::new(), now())
        .await
        .map(drop)
}

pub(super) fn page(page: u32, limit: u32) -> PageRequest {
    PageRequest { page, limit }
}

pub(super) fn record(hash: &str, status: u16, body: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        request_hash: hash.into(),
        status,
        body: body.into(),
    }
}

/// Cancels the order (pending to cancelled), as its customer does.
pub(super) async fn cancel(stores: &Stores, id: Id) -> TransitionOutcome {
    stores
        .orders
        .transition_order(
            id,
            OrderStatus::Pending,
            OrderStatus::Cancelled,
            None,
            now(),
        )
        .await
        .unwrap()
}

pub(super) fn moved(outcome: TransitionOutcome) -> Order {
    match outcome {
        TransitionOutcome::Moved(order) => order,
        other => panic!("expected the order to move, got {other:?}"),
    }
}

// --- Instantiation ------------------------------------------------------------------------------

/// A store under test and what keeps it alive.
pub(super) struct Fixture {
    pub(super) stores: Stores,
    pub(super) mongo: Option<MongoFixture>,
    sqlite_dir: Option<std::path::PathBuf>,
}

pub(super) struct MongoFixture {
    /// The same backend as the fixture's `stores`, for what only MongoDB has.
    pub(super) store: MongoStore,
    /// Where `store` is connected, for a second connection to the same database.
    pub(super) uri: String,
    /// None when the tests run against the server named by `MONGODB_TEST_URI`.
    pub(super) ferretdb: Option<support::ferretdb::FerretDb>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Fixture {
    pub(super) fn sqlite() -> Fixture {
        let dir = support::temp_dir("store");
        let db = SqliteDb::open(&dir.join("store.db")).expect("open a SQLite store");
        Fixture {
            stores: Stores::new(SqliteStore::new(db)),
            mongo: None,
            sqlite_dir: Some(dir),
        }
    }

    /// A fresh database on `MONGODB_TEST_URI` if set, else on a FerretDB of its own. `None`
    /// (after a SKIPPED line) when neither is available.
    pub(super) async fn mongo(test: &str) -> Option<Fixture> {
        let database = format!(
            "contract_{test}_{}_{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        );
        // MongoDB limits database names to 63 bytes.
        let database = &database[database.len().saturating_sub(60)..];
        let (uri, ferretdb) = match std::env::var("MONGODB_TEST_URI") {
            Ok(base) => (with_database(&base, database), None),
            Err(_) => {
                let ferretdb = support::ferretdb::start()?;
                (ferretdb.uri(database), Some(ferretdb))
            }
        };
        let store = MongoStore::connect(&uri)
            .await
            .expect("connect to the test server");
        Some(Fixture {
            stores: Stores::new(store.clone()),
            mongo: Some(MongoFixture {
                store,
                uri,
                ferretdb,
            }),
            sqlite_dir: None,
        })
    }

    /// Drops the test's database on a shared server; a failed test keeps it for inspection.
    pub(super) async fn finish(self) {
        if let Some(MongoFixture {
            store,
            ferretdb: None,
            ..
        }) = &self.mongo
        {
            store
                .database()
                .drop()
                .await
                .expect("drop the test database");
        }
    }
}

/// `base` (`mongodb://host:port/?options`) with `database` as its default database.
fn with_database(base: &str, database: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (base, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let hosts = match head[scheme_end..].find('/') {
        Some(slash) => &head[..scheme_end + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{hosts}/{database}?{q}"),
        None => format!("{hosts}/{database}"),
    }
}
