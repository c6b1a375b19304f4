//! Retention on MongoDB: TTL indexes delete expired sessions (`sessions_expiry`) and the
//! records of sent emails (`notifications_expiry`) on the server. Where the server refused
//! them (FerretDB 1.x), this sweep deletes what they would have; where it has them, the same
//! deletes find nothing, for the cost of two indexed round trips an hour.

use async_trait::async_trait;
use bson::doc;
use chrono::{DateTime, Utc};

use super::documents::bson_time;
use super::errors::db_error;
use super::MongoStore;
use crate::store::{Purged, Retention, StoreResult};

#[async_trait]
impl Retention for MongoStore {
    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        sessions_expired_before: DateTime<Utc>,
    ) -> StoreResult<Purged> {
        let sessions = self
            .write(
                self.sessions.delete_many(
                    doc! { "expiresAt": { "$lt": bson_time(sessions_expired_before) } },
                ),
            )
            .await
            .map_err(db_error)?;
        let notifications = self
            .write(
                self.notifications
                    .delete_many(doc! { "sent": true, "expiresAt": { "$lt": bson_time(now) } }),
            )
            .await
            .map_err(db_error)?;
        Ok(Purged {
            sessions: sessions.deleted_count,
            notifications: notifications.deleted_count,
        })
    }
}
