//! What the store deletes when it is past its use, on the retention sweep's schedule
//! (`crate::retention`): sessions expired for longer than a grace period (a refresh token
//! presented just after its expiry still finds its session and is refused as expired, not
//! unknown), and the records of sent emails past their `keep_until`. On MongoDB, TTL indexes do
//! both where the server has them; the sweep's deletes are then no-ops.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// How many records one sweep deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub notifications: u64,
}

#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Deletes the sessions that expired before `sessions_expired_before`, and the email
    /// records kept until before `now`. Unsent email claims are never deleted.
    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        sessions_expired_before: DateTime<Utc>,
    ) -> StoreResult<Purged>;
}
