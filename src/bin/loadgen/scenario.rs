//! What one iteration of each scenario does, and the weighted mix that picks among them.
//!
//! An iteration's first request is timed from the instant the driver says it should have started
//! (in the open model that is the intended arrival time, which corrects coordinated omission);
//! requests that follow within the same iteration are timed from their own send time, because
//! nothing but the previous answer held them back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::Rng;

use crate::client::{Api, OrderView};
use crate::follower::{Followers, Outcome, StreamCtx};
use crate::setup::{Fixtures, Needs};
use crate::stats::{Endpoint, Failure, OrderEnd, Stats};

/// Page size of `GET /api/products` while browsing: the service's default.
pub const BROWSE_LIMIT: u64 = 10;

/// One kind of iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET /health`: the framework's floor, no business code.
    Health,
    /// A random page of products, then one product by id.
    Browse,
    /// Place an order of 1–3 products, then poll it until it is no longer pending.
    Order,
    /// Log in with a correct password: one password verification on the service.
    Login,
    /// Read the same (cached) order again and again.
    CachedOrder,
}

impl Op {
    /// The endpoint an iteration starts with: where an arrival that was never sent is counted.
    pub fn first_endpoint(self) -> Endpoint {
        match self {
            Op::Health => Endpoint::Health,
            Op::Browse => Endpoint::ListProducts,
            Op::Order => Endpoint::CreateOrder,
            Op::Login => Endpoint::Login,
            Op::CachedOrder => Endpoint::GetOrder,
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Op> {
        Ok(match name {
            "health" => Op::Health,
            "browse" => Op::Browse,
            "order" => Op::Order,
            "login" => Op::Login,
            "cached-order" => Op::CachedOrder,
            other => {
                bail!("unknown scenario {other:?} (health, browse, order, login, cached-order)")
            }
        })
    }
}

/// A weighted choice of operations, e.g. `browse=70,order=30`.
#[derive(Clone, Debug)]
pub struct Mix {
    weighted: Vec<(Op, u32)>,
    total: u32,
}

impl Mix {
    pub fn only(op: Op) -> Mix {
        Mix {
            weighted: vec![(op, 1)],
            total: 1,
        }
    }

    pub fn parse(spec: &str) -> anyhow::Result<Mix> {
        let mut weighted = vec![];
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?} is not name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("weight of {name:?} is not a whole number"))?;
            if weight > 0 {
                weighted.push((Op::parse(name.trim())?, weight));
            }
        }
        let total = weighted.iter().map(|(_, w)| *w).sum();
        if total == 0 {
            bail!("the mix {spec:?} has no operation with a positive weight");
        }
        Ok(Mix { weighted, total })
    }

    pub fn pick(&self, rng: &mut StdRng) -> Op {
        let mut roll = rng.gen_range(0..self.total);
        for (op, weight) in &self.weighted {
            if roll < *weight {
                return *op;
            }
            roll -= weight;
        }
        unreachable!("roll is below the total weight")
    }

    pub fn contains(&self, op: Op) -> bool {
        self.weighted.iter().any(|(o, _)| *o == op)
    }

    /// What must exist before the run: accounts for anything authenticated, a product set for
    /// orders, product ids for browsing.
    pub fn needs(&self, accounts: usize, order_products: usize) -> Needs {
        let ordering = self.contains(Op::Order) || self.contains(Op::CachedOrder);
        let authenticated = ordering || self.contains(Op::Login);
        Needs {
            accounts: if authenticated { accounts.max(1) } else { 0 },
            order_products: if ordering { order_products.max(1) } else { 0 },
            browse: self.contains(Op::Browse),
            cached_order: self.contains(Op::CachedOrder),
        }
    }
}

/// How an iteration learns that its order is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Follow {
    /// One `GET /api/orders/events` per account, opened before its first order and kept for
    /// the run: the service pushes every status change of the account's orders on it.
    Sse,
    /// `GET /api/orders/{id}/events`, one stream per order.
    SsePerOrder,
    /// `GET /api/orders/{id}` again and again, waiting longer each time (or as long as the
    /// answer's `Retry-After` says).
    Poll,
}

/// What every iteration shares.
pub struct Ctx {
    pub follow: Follow,
    /// The per-account streams of `Follow::Sse`.
    pub followers: Followers,
    /// A creation shed with 503 is sent again this many times at most, each after the
    /// answer's `Retry-After`.
    pub shed_retries: u32,
    pub api: Api,
    pub stats: Arc<Stats>,
    pub fixtures: Fixtures,
    /// First wait before polling a new order; each further wait is 1.5 times longer, up to
    /// `poll_max`, so a slow worker is not also buried under polls.
    pub poll_interval: Duration,
    pub poll_max: Duration,
    /// After this, an order still pending is given up on and counted as unfinished.
    pub drain_deadline: Instant,
}

/// Who is running an iteration: a virtual user (closed model) or one arrival (open model).
pub struct Actor<'a> {
    /// Picks the stats shard and the account.
    pub id: usize,
    pub rng: &'a mut StdRng,
}

pub async fn run(ctx: &Ctx, actor: &mut Actor<'_>, op: Op, started: Instant) {
    match op {
        Op::Health => {
            let r = ctx.api.health().await;
            ctx.stats.record(actor.id, Endpoint::Health, started, r);
        }
        Op::Browse => browse(ctx, actor, started).await,
        Op::Order => order(ctx, actor, started).await,
        Op::Login => {
            let account = &ctx.fixtures.accounts[actor.id % ctx.fixtures.accounts.len()];
            let r = ctx.api.login(&account.email, &account.password).await;
            ctx.stats
                .record(actor.id, Endpoint::Login, started, r.map(drop));
        }
        Op::CachedOrder => {
            let token = &ctx.fixtures.accounts[0].token;
            let id = ctx.fixtures.cached_order.as_deref().unwrap_or_default();
            let r = ctx.api.get_order(token, id).await.result;
            ctx.stats
                .record(actor.id, Endpoint::GetOrder, started, r.map(drop));
        }
    }
}

async fn browse(ctx: &Ctx, actor: &mut Actor<'_>, started: Instant) {
    let f = &ctx.fixtures;
    let page = actor.rng.gen_range(1..=f.browse_pages);
    let r = ctx.api.list_products(page, BROWSE_LIMIT).await;
    ctx.stats
        .record(actor.id, Endpoint::ListProducts, started, r.map(drop));

    let id = &f.browse_ids[actor.rng.gen_range(0..f.browse_ids.len())];
    let t = Instant::now();
    let r = ctx.api.get_product(id).await;
    ctx.stats
        .record(actor.id, Endpoint::GetProduct, t, r.map(drop));
}

async fn order(ctx: &Ctx, actor: &mut Actor<'_>, started: Instant) {
    let f = &ctx.fixtures;
    let account = actor.id % f.accounts.len();
    let token = &f.accounts[account].token;
    let lines = actor.rng.gen_range(1..=3.min(f.order_products.len()));
    let products: Vec<&str> = sample(&mut *actor.rng, f.order_products.len(), lines)
        .into_iter()
        .map(|i| f.order_products[i].as_str())
        .collect();

    // The account's stream is open before its first order is placed, so none of its events
    // can be missed.
    let streaming = ctx.follow == Follow::Sse
        && ctx
            .followers
            .of(account)
            .ensure_open(StreamCtx {
                api: &ctx.api,
                stats: &ctx.stats,
                token,
                key: actor.id,
                until: ctx.drain_deadline,
            })
            .await;

    let mut sent = started;
    let mut retries = 0;
    let order = loop {
        let placed = ctx.api.create_order(token, &products).await;
        match placed.result {
            Ok(order) => {
                ctx.stats
                    .record(actor.id, Endpoint::CreateOrder, sent, Ok(()));
                break order;
            }
            Err(f) => {
                let shed = f == Failure::Status(503);
                ctx.stats
                    .record(actor.id, Endpoint::CreateOrder, sent, Err(f));
                // A shed creation is tried again as the service asks, a few times, as a client
                // that honours `Retry-After` would; anything else is given up on.
                if !shed || retries >= ctx.shed_retries {
                    return;
                }
                retries += 1;
                let wait = placed.retry_after.unwrap_or(Duration::from_secs(1));
                if Instant::now() + wait >= ctx.drain_deadline {
                    return;
                }
                tokio::time::sleep(wait).await;
                sent = Instant::now();
            }
        }
    };
    let placed_at = Instant::now();
    ctx.stats.order_created(actor.id, started);

    // A stream that fails (refused, dropped, cut) leaves the order to polling, as a client
    // would fall back.
    let streamed = match ctx.follow {
        Follow::Sse if streaming => {
            let follower = ctx.followers.of(account);
            match follower.wait(&order.id, ctx.drain_deadline).await {
                Outcome::Ended(o) => end_of(&o, placed_at.elapsed()),
                Outcome::TimedOut => Some(OrderEnd::Unfinished),
                Outcome::Lost => None,
            }
        }
        Follow::SsePerOrder => follow_stream(ctx, actor, token, &order.id, placed_at).await,
        Follow::Sse | Follow::Poll => None,
    };
    let end = match streamed {
        Some(end) => end,
        None => poll(ctx, actor, token, &order.id, placed_at).await,
    };
    ctx.stats.order_ended(actor.id, started, end);
}

/// The end of an order as a completed, failed or cancelled order view shows it.
fn end_of(o: &OrderView, client_lag: Duration) -> Option<OrderEnd> {
    match o.status.as_str() {
        "completed" => Some(OrderEnd::Completed {
            server_lag: (o.updated_at - o.created_at).to_std().unwrap_or_default(),
            client_lag,
        }),
        "failed" => Some(OrderEnd::Failed),
        "cancelled" => Some(OrderEnd::Cancelled),
        _ => None,
    }
}

/// Follows the order's status stream to its end; `None` if the stream failed.
async fn follow_stream(
    ctx: &Ctx,
    actor: &mut Actor<'_>,
    token: &str,
    id: &str,
    placed_at: Instant,
) -> Option<OrderEnd> {
    let t = Instant::now();
    let remaining = ctx.drain_deadline.saturating_duration_since(t);
    let response = ctx.api.order_events(token, id, remaining).await;
    let response = match response {
        Ok(response) => {
            ctx.stats.record(actor.id, Endpoint::OrderEvents, t, Ok(()));
            response
        }
        Err(f) => {
            ctx.stats.record(actor.id, Endpoint::OrderEvents, t, Err(f));
            return None;
        }
    };
    match Api::until_terminal(response).await {
        Ok(o) => end_of(&o, placed_at.elapsed()),
        Err(Failure::Transport("timeout")) => Some(OrderEnd::Unfinished),
        Err(_) => None,
    }
}

/// Polls until the worker is done with the order. The exact lag comes from the order's own
/// timestamps; the observed one is only as fine as the poll interval.
async fn poll(
    ctx: &Ctx,
    actor: &mut Actor<'_>,
    token: &str,
    id: &str,
    placed_at: Instant,
) -> OrderEnd {
    let mut wait = ctx.poll_interval;
    loop {
        tokio::time::sleep(wait).await;
        wait = wait.mul_f64(1.5).min(ctx.poll_max.max(ctx.poll_interval));
        if Instant::now() >= ctx.drain_deadline {
            return OrderEnd::Unfinished;
        }
        let t = Instant::now();
        let seen = ctx.api.get_order(token, id).await;
        let client_lag = placed_at.elapsed();
        // The service says when a pending order is worth asking about again.
        if let Some(after) = seen.retry_after {
            wait = after;
        }
        match seen.result {
            Ok(o) => {
                ctx.stats.record(actor.id, Endpoint::GetOrder, t, Ok(()));
                if let Some(end) = end_of(&o, client_lag) {
                    return end;
                }
            }
            // Counted as an error; the order itself may still complete, so keep polling.
            Err(f) => ctx.stats.record(actor.id, Endpoint::GetOrder, t, Err(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mix_parses_and_picks_only_weighted_ops() {
        let mix = Mix::parse("browse=70, order=30,login=0").unwrap();
        assert!(mix.contains(Op::Browse) && mix.contains(Op::Order));
        assert!(!mix.contains(Op::Login));
        let mut rng = StdRng::seed_from_u64(7);
        let orders = (0..10_000)
            .filter(|_| mix.pick(&mut rng) == Op::Order)
            .count();
        assert!((2_500..3_500).contains(&orders), "{orders}");
    }

    #[test]
    fn mix_rejects_nonsense() {
        assert!(Mix::parse("browse").is_err());
        assert!(Mix::parse("browse=x").is_err());
        assert!(Mix::parse("fly=3").is_err());
        assert!(Mix::parse("browse=0").is_err());
    }
}
