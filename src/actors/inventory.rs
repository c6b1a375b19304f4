//! InventoryActor: the catalogue and the stock. Reservations take stock for every line of an
//! order or for none (the store does it with conditional decrements, so concurrent orders can
//! never oversell), each under a hold; stock comes back through the order's transition to
//! failed or cancelled, or, for an order never stored, through its hold (`super::holds`: the
//! clearing of stored orders' holds and the hold sweeper, which this actor runs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::holds::{self, HoldClears};
use super::{count_restart, guarded_as, MAILBOX_CAPACITY};
use crate::domain::{Id, Page};
use crate::error::AppError;
use crate::messages::inventory::*;
use crate::metrics::{backend_call, STOCK_RESERVATION_FAILURES_TOTAL};
use crate::round_trips::{self, WorkPath};
use crate::store::{Catalogue, ReserveOutcome};

pub const NAME: &str = "inventory";

pub struct InventoryActor {
    pub catalogue: Arc<dyn Catalogue>,
    /// Forgets the holds of stored orders, batched.
    pub holds: HoldClears,
    /// Holds older than this whose order does not exist are given back (`STOCK_HOLD_EXPIRY`).
    pub hold_expiry: Duration,
    /// Set while a sweeper pass runs (shared across restarts), so passes never pile up.
    pub sweeping: Arc<AtomicBool>,
}

impl Actor for InventoryActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        // A few looks per expiry: a stale hold waits at most a third of it more.
        let every = (self.hold_expiry / 3).clamp(Duration::from_secs(1), Duration::from_secs(60));
        ctx.run_interval(every, |actor, _| {
            if actor.sweeping.swap(true, Ordering::AcqRel) {
                return;
            }
            let (catalogue, expiry, busy) = (
                actor.catalogue.clone(),
                actor.hold_expiry,
                actor.sweeping.clone(),
            );
            // Not tied to this actor's context: a pass outlives a restart of the actor, so
            // the busy flag is always cleared.
            actix::spawn(round_trips::scope(WorkPath::Worker, async move {
                if let Err(e) = holds::sweep(catalogue.as_ref(), expiry).await {
                    tracing::warn!(error = %e, "hold sweeper pass failed");
                }
                busy.store(false, Ordering::Release);
            }));
        });
    }
}

impl Supervised for InventoryActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        count_restart(NAME);
    }
}

impl Handler<ListProducts> for InventoryActor {
    type Result = ResponseActFuture<Self, Result<Page<crate::domain::Product>, AppError>>;
    fn handle(&mut self, msg: ListProducts, _: &mut Context<Self>) -> Self::Result {
        let catalogue = self.catalogue.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            let (items, total) =
                backend_call("store", "list_products", catalogue.list_products(msg.page)).await?;
            Ok(Page::new(items, msg.page, total))
        })
    }
}

impl Handler<GetProduct> for InventoryActor {
    type Result = ResponseActFuture<Self, Result<crate::domain::Product, AppError>>;
    fn handle(&mut self, msg: GetProduct, _: &mut Context<Self>) -> Self::Result {
        let catalogue = self.catalogue.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            backend_call("store", "find_product", catalogue.find_product(msg.id))
                .await?
                .ok_or(AppError::NotFound("product"))
        })
    }
}

impl Handler<CreateProduct> for InventoryActor {
    type Result = ResponseActFuture<Self, Result<crate::domain::Product, AppError>>;
    fn handle(&mut self, msg: CreateProduct, _: &mut Context<Self>) -> Self::Result {
        let catalogue = self.catalogue.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            let product = backend_call(
                "store",
                "insert_product",
                catalogue.insert_product(&msg.product, Id::new(), crate::domain::now()),
            )
            .await?;
            tracing::info!(product_id = %product.id, "product created");
            Ok(product)
        })
    }
}

impl Handler<UpdateProduct> for InventoryActor {
    type Result = ResponseActFuture<Self, Result<crate::domain::Product, AppError>>;
    fn handle(&mut self, msg: UpdateProduct, _: &mut Context<Self>) -> Self::Result {
        let catalogue = self.catalogue.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            let product = backend_call(
                "store",
                "update_product",
                catalogue.update_product(msg.id, &msg.patch, crate::domain::now()),
            )
            .await?
            .ok_or(AppError::NotFound("product"))?;
            tracing::info!(product_id = %product.id, "product updated");
            Ok(product)
        })
    }
}

impl Handler<ReserveStock> for InventoryActor {
    type Result = ResponseActFuture<
        Self,
        Result<Vec<(crate::domain::Product, crate::domain::OrderLine)>, AppError>,
    >;
    fn handle(&mut self, msg: ReserveStock, _: &mut Context<Self>) -> Self::Result {
        let catalogue = self.catalogue.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            match backend_call(
                "store",
                "reserve_stock",
                catalogue.reserve_stock(&msg.lines, &msg.hold),
            )
            .await?
            {
                ReserveOutcome::Reserved(reserved) => Ok(reserved),
                ReserveOutcome::UnknownProducts(ids) => {
                    metrics::counter!(STOCK_RESERVATION_FAILURES_TOTAL, "reason" => "unknown_product").increment(1);
                    Err(AppError::UnknownProducts(ids))
                }
                ReserveOutcome::Insufficient(shortages) => {
                    metrics::counter!(STOCK_RESERVATION_FAILURES_TOTAL, "reason" => "insufficient_stock").increment(1);
                    Err(AppError::InsufficientStock(shortages))
                }
            }
        })
    }
}

impl Handler<ReleaseStock> for InventoryActor {
    type Result = ResponseActFuture<Self, Result<(), AppError>>;
    fn handle(&mut self, msg: ReleaseStock, _: &mut Context<Self>) -> Self::Result {
        let catalogue = self.catalogue.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            backend_call(
                "store",
                "release_stock",
                catalogue.release_stock(&msg.lines, &msg.hold),
            )
            .await?;
            Ok(())
        })
    }
}

impl Handler<ClearHold> for InventoryActor {
    type Result = ();
    fn handle(&mut self, msg: ClearHold, _: &mut Context<Self>) {
        self.holds.clear(msg.hold, msg.lines);
    }
}
