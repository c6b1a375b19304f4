//! The outbox flags of placed orders, set in the background and in batches.
//!
//! Once an order's queue message is sent, its `enqueued` flag tells the outbox reconciler to
//! leave it alone. Nobody needs to wait for that flag: the reconciler only looks at orders
//! older than its grace period (seconds), and a message it sends twice is harmless because
//! processing is idempotent. So instead of a store write on every order's request path, the
//! ids go to one task that flags everything waiting in one store call (one write on the
//! embedded store, one update on MongoDB). A flag lost to a crash or a store failure only means
//! the reconciler sends that order's message once more.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::domain::Id;
use crate::metrics::backend_call;
use crate::round_trips;
use crate::store::Orders;

/// Most ids in one store call.
const MAX_MARKS: usize = 256;

#[derive(Clone)]
pub struct EnqueuedMarks {
    ids: mpsc::UnboundedSender<Id>,
}

impl EnqueuedMarks {
    /// Starts the marking task on the current runtime; it ends when the last handle is dropped.
    pub fn start(orders: Arc<dyn Orders>) -> EnqueuedMarks {
        let (ids, inbox) = mpsc::unbounded_channel();
        // The flags are the tail of placing an order: their round trips count as requests', but
        // no client waits on them.
        tokio::spawn(round_trips::request_tail(run(orders, inbox)));
        EnqueuedMarks { ids }
    }

    /// Flags the order soon; returns at once.
    pub fn mark(&self, order_id: Id) {
        if self.ids.send(order_id).is_err() {
            // The task is gone (the runtime is shutting down): the reconciler covers the order.
            tracing::debug!(order_id = %order_id, "enqueued flag not set; the outbox may resend");
        }
    }
}

/// Takes what is waiting (one store call's worth), flags it, and again. The channel only holds
/// what arrives during one call, since each call takes everything waiting.
async fn run(orders: Arc<dyn Orders>, mut inbox: mpsc::UnboundedReceiver<Id>) {
    let mut batch = Vec::with_capacity(MAX_MARKS);
    while inbox.recv_many(&mut batch, MAX_MARKS).await > 0 {
        if let Err(e) =
            backend_call("store", "mark_enqueued", orders.mark_enqueued_many(&batch)).await
        {
            tracing::warn!(error = %e, orders = batch.len(), "could not flag orders as enqueued; the outbox may send them twice");
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{Cents, NewProduct, Order, OrderItem, Quantity, ShippingAddress};
    use crate::store::sqlite::test_support::temp_db;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Stores;

    #[tokio::test]
    async fn every_marked_order_is_flagged() {
        let temp = temp_db();
        let stores = Stores::new(SqliteStore::new(temp.db.clone()));
        let product = stores
            .catalogue
            .insert_product(
                &NewProduct {
                    name: "a".into(),
                    description: "b".into(),
                    price: Cents::price(100).unwrap(),
                    stock: 1000,
                },
                Id::new(),
                crate::domain::now(),
            )
            .await
            .unwrap();
        let marks = EnqueuedMarks::start(stores.orders.clone());
        for _ in 0..300 {
            let item = OrderItem::new(
                product.id,
                product.name.clone(),
                product.price,
                Quantity::parse(1).unwrap(),
            );
            let order = Order::place(
                Id::new(),
                vec![item],
                ShippingAddress {
                    street: "1 Main St".into(),
                    city: "Springfield".into(),
                    state: "IL".into(),
                    zip_code: "62701".into(),
                    country: "US".into(),
                },
                "credit_card".into(),
                crate::domain::now(),
            );
            stores.orders.insert_order(&order).await.unwrap();
            marks.mark(order.id);
        }
        let later = crate::domain::now() + chrono::Duration::minutes(1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = stores.orders.unenqueued_orders(later, 1000).await.unwrap();
            if left.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} orders still unflagged",
                left.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
