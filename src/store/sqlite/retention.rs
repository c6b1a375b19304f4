//! The embedded store's retention deletes, one write, each on an index (`sessions_by_expiry`,
//! `order_notifications_expiry`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::rows::ts;
use super::SqliteStore;
use crate::store::{Purged, Retention, StoreResult};

#[async_trait]
impl Retention for SqliteStore {
    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        sessions_expired_before: DateTime<Utc>,
    ) -> StoreResult<Purged> {
        self.db
            .write(move |c| {
                let sessions = c
                    .prepare_cached("DELETE FROM sessions WHERE expires_at < ?1")?
                    .execute([ts(sessions_expired_before)])?;
                let notifications = c
                    .prepare_cached(
                        "DELETE FROM order_notifications \
                         WHERE keep_until < ?1 AND sent_at IS NOT NULL",
                    )?
                    .execute([ts(now)])?;
                Ok(Purged {
                    sessions: sessions as u64,
                    notifications: notifications as u64,
                })
            })
            .await
    }
}
