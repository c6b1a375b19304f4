//! Stored answers to requests sent with an `Idempotency-Key`, so a retry gets the first
//! answer instead of a second order. Records expire after a day.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::Id;

/// A stored answer to an idempotent request.
#[derive(Clone, Debug)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

#[async_trait]
pub trait Idempotency: Send + Sync + 'static {
    /// The record of `key` for this user, unless it has expired.
    async fn find_idempotency(
        &self,
        user_id: Id,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Stores the answer unless one exists for this key already; returns the one that won.
    async fn save_idempotency(
        &self,
        user_id: Id,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord>;
}
