//! The indexes the MongoDB store relies on (uniqueness is what makes claims and emails atomic
//! even where updates are not), created at connect; and the fallback where the server refuses
//! TTL indexes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

use super::errors::db_error;
use super::idempotency::IDEMPOTENCY_TTL_HOURS;
use super::MongoStore;
use crate::error::BackendError;
use crate::store::StoreResult;

/// Warned about once per process, not once per connect.
static TTL_WARNED: AtomicBool = AtomicBool::new(false);

impl MongoStore {
    /// Creates every index (a no-op for those that exist). Returns whether the server accepted
    /// the TTL indexes.
    pub(super) async fn create_indexes(&self) -> StoreResult<bool> {
        fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique.then_some(true))
                        .build(),
                )
                .build()
        }
        self.users
            .create_index(index(doc! { "email": 1 }, "users_email", true))
            .await
            .map_err(db_error)?;
        self.secondary_index(
            &self.products,
            doc! { "createdAt": 1, "_id": 1 },
            "products_by_age",
        )
        .await?;
        // The hold sweeper's range over the entries' times (see `holds`): only products with a
        // stale hold are read. Multikey; holds live for a batch, so it stays small.
        self.secondary_index(&self.products, doc! { "holds": 1 }, "products_holds")
            .await?;
        self.secondary_index(
            &self.orders,
            doc! { "userId": 1, "createdAt": -1, "_id": -1 },
            "orders_by_user",
        )
        .await?;
        // An admin's look through the orders in one status, newest first; through its status
        // prefix also the search for stranded orders and interrupted stock returns (and, for
        // the move at connect, pending orders flagged by earlier versions).
        self.secondary_index(
            &self.orders,
            doc! { "status": 1, "createdAt": -1, "_id": -1 },
            "orders_by_status",
        )
        .await?;
        // Earlier versions kept the outbox as a flag on orders, indexed here; the outbox has
        // its own collection now, and an index the queries no longer use still costs every
        // order write. Gone already is fine.
        let _ = self.orders.drop_index("orders_outbox").await;
        // Status streams' (`crate::events`): the changes since an event id, everyone's and
        // one user's.
        self.secondary_index(
            &self.orders,
            doc! { "updatedAt": 1, "_id": 1 },
            "orders_by_change",
        )
        .await?;
        self.secondary_index(
            &self.orders,
            doc! { "userId": 1, "updatedAt": 1, "_id": 1 },
            "orders_by_user_change",
        )
        .await?;
        self.notifications
            .create_index(index(
                doc! { "orderId": 1, "status": 1 },
                "notifications_claim",
                true,
            ))
            .await
            .map_err(db_error)?;
        // The email sweeper's search: unsent claims, oldest first.
        self.secondary_index(
            &self.notifications,
            doc! { "sent": 1, "claimedAt": 1 },
            "notifications_unsent",
        )
        .await?;
        self.secondary_index(&self.outbox, doc! { "createdAt": 1 }, "outbox_by_age")
            .await?;

        let idempotency_ttl = self
            .ttl_index(
                &self.idempotency.clone_with_type::<Document>(),
                "createdAt",
                "idempotency_expiry",
                Duration::from_secs(IDEMPOTENCY_TTL_HOURS as u64 * 3600),
            )
            .await?;
        let sessions_ttl = self
            .ttl_index(
                &self.sessions.clone_with_type::<Document>(),
                "expiresAt",
                "sessions_expiry",
                Duration::ZERO,
            )
            .await?;
        // Sent records go when they are past their use (`expiresAt`, set when marked sent).
        let notifications_ttl = self
            .ttl_index(
                &self.notifications.clone_with_type::<Document>(),
                "expiresAt",
                "notifications_expiry",
                Duration::ZERO,
            )
            .await?;
        Ok(idempotency_ttl && sessions_ttl && notifications_ttl)
    }

    /// A non-unique index, made only where queries use one. A server that finds documents by
    /// `_id` alone (FerretDB 1.x, see `point_access`) uses none for a query, and would pay for
    /// it at every write of the collection: there it is not made, and one an earlier version
    /// made is dropped.
    async fn secondary_index<D: Send + Sync>(
        &self,
        coll: &Collection<D>,
        keys: Document,
        name: &str,
    ) -> StoreResult<()> {
        if self.by_id_only() {
            // Absent already is the usual answer, and fine.
            let _ = coll.drop_index(name).await;
            return Ok(());
        }
        let model = IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().name(name.to_owned()).build())
            .build();
        coll.create_index(model).await.map_err(db_error)?;
        Ok(())
    }

    /// A TTL index on `field`; when the server refuses TTL indexes (FerretDB 1.x answers
    /// NotImplemented), a plain index under another name instead, so the code's own purges
    /// stay cheap.
    async fn ttl_index(
        &self,
        coll: &Collection<Document>,
        field: &str,
        name: &str,
        expire_after: Duration,
    ) -> StoreResult<bool> {
        let ttl = IndexModel::builder()
            .keys(doc! { field: 1 })
            .options(
                IndexOptions::builder()
                    .name(name.to_owned())
                    .expire_after(expire_after)
                    .build(),
            )
            .build();
        let refused = match coll.create_index(ttl).await {
            Ok(_) => return Ok(true),
            Err(e) => match db_error(e) {
                BackendError::Other { detail, .. } => detail,
                other => return Err(other),
            },
        };
        if !TTL_WARNED.swap(true, Ordering::Relaxed) {
            // The driver's message ends with the raw server reply; the first clause says it all.
            let reason = refused.split(", labels").next().unwrap_or(&refused);
            tracing::warn!(
                error = %reason,
                "the database refused TTL indexes; expired sessions, idempotency records and \
                 email records are ignored and purged by the service instead"
            );
        }
        self.secondary_index(coll, doc! { field: 1 }, &format!("{name}_plain"))
            .await?;
        Ok(false)
    }
}
