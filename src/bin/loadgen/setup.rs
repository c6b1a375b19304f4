//! What a run needs before its clock starts: accounts with tokens, a product set that can not run
//! out of stock, product ids to browse, and (for `cached-order`) one completed order.
//!
//! All of it is created through the public API, under names unique to this run, so runs never
//! collide with each other or with the demo data, and nothing here is timed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::Api;

/// Registrations in flight at once: each costs the service a password hash, and more in flight
/// would only queue on its hashing threads.
const REGISTER_CONCURRENCY: usize = 8;
/// Stock given to each benchmark product: far more than any run can order.
const BENCH_STOCK: i64 = 10_000_000;

/// What a scenario mix needs prepared.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    pub accounts: usize,
    pub order_products: usize,
    pub browse: bool,
    pub cached_order: bool,
}

pub struct Account {
    pub email: String,
    pub password: String,
    pub token: String,
}

/// The run's fixtures, read-only once the clock starts.
#[derive(Default)]
pub struct Fixtures {
    pub accounts: Vec<Account>,
    /// Products with effectively unlimited stock, created for this run.
    pub order_products: Vec<String>,
    /// Product ids anyone can read, for `GET /api/products/{id}`.
    pub browse_ids: Vec<String>,
    /// Pages of `GET /api/products` at the browse page size.
    pub browse_pages: u64,
    /// An order owned by `accounts[0]`, completed (so cached) before the run.
    pub cached_order: Option<String>,
}

pub struct Admin<'a> {
    pub email: &'a str,
    pub password: &'a str,
}

/// A tag unique to this run: time and process id, so parallel runs do not clash.
pub fn run_tag() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{millis:x}{:x}", std::process::id())
}

pub async fn prepare(
    api: &Api,
    needs: Needs,
    admin: Admin<'_>,
    browse_limit: u64,
) -> anyhow::Result<Fixtures> {
    let tag = run_tag();
    let mut fixtures = Fixtures::default();

    if needs.order_products > 0 {
        let admin_token = api
            .login(admin.email, admin.password)
            .await
            .map_err(|f| anyhow!("admin login as {} failed: {f}", admin.email))?
            .access_token;
        for i in 0..needs.order_products {
            let name = format!("loadgen {tag} product {i}");
            let price = 100 + i64::try_from(i).unwrap_or(0);
            let product = api
                .create_product(&admin_token, &name, price, BENCH_STOCK)
                .await
                .map_err(|f| anyhow!("creating benchmark product failed: {f}"))?;
            fixtures.order_products.push(product.id);
        }
    }

    if needs.accounts > 0 {
        fixtures.accounts = register_accounts(api, &tag, needs.accounts).await?;
    }

    if needs.browse {
        let first = api
            .list_products(1, browse_limit)
            .await
            .map_err(|f| anyhow!("listing products failed: {f}"))?;
        fixtures.browse_pages = first.total_pages.max(1);
        fixtures.browse_ids = first.data.into_iter().map(|p| p.id).collect();
        if fixtures.browse_ids.is_empty() {
            bail!("the service has no products to browse");
        }
    }

    if needs.cached_order {
        fixtures.cached_order = Some(completed_order(api, &fixtures).await?);
    }
    Ok(fixtures)
}

async fn register_accounts(api: &Api, tag: &str, count: usize) -> anyhow::Result<Vec<Account>> {
    let permits = Arc::new(Semaphore::new(REGISTER_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let (api, permits) = (api.clone(), permits.clone());
        let email = format!("loadgen-{tag}-{i}@example.com");
        let password = format!("loadgen-{tag}-secret");
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let tokens = api
                .register(&email, &password, &format!("Load Generator {i}"))
                .await
                .map_err(|f| anyhow!("registering {email} failed: {f}"))?;
            anyhow::Ok((
                i,
                Account {
                    email,
                    password,
                    token: tokens.access_token,
                },
            ))
        });
    }
    let mut accounts = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        accounts.push(done.context("registration task")??);
    }
    // Stable order, so `accounts[i]` is the same account whichever registration finished first.
    accounts.sort_by_key(|(i, _)| *i);
    Ok(accounts.into_iter().map(|(_, a)| a).collect())
}

/// Places one order and waits for it to complete: the service caches an order when its status
/// changes, so from then on every read of it is a cache hit.
async fn completed_order(api: &Api, fixtures: &Fixtures) -> anyhow::Result<String> {
    let account = fixtures
        .accounts
        .first()
        .context("cached-order needs an account")?;
    let product = fixtures
        .order_products
        .first()
        .context("cached-order needs a product")?;
    let order = api
        .create_order(&account.token, &[product])
        .await
        .result
        .map_err(|f| anyhow!("placing the order to read failed: {f}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let seen = api
            .get_order(&account.token, &order.id)
            .await
            .result
            .map_err(|f| anyhow!("reading the order failed: {f}"))?;
        if seen.status != "pending" && seen.status != "processing" {
            return Ok(order.id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("order {} did not complete within 30 s", order.id)
}
