//! Users and their sessions: what registration, login, token refresh and logout read and
//! write. A session is one login's refresh-token family.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;

use super::StoreResult;
use crate::domain::{Email, Id, User};

/// A login's refresh-token family. Each refresh replaces `current_jti`; presenting an older one
/// is reuse of a stolen token and revokes the whole family.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: Id,
    pub user_id: Id,
    pub current_jti: String,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    Rotated,
    /// The session is gone, revoked or expired.
    Inactive,
    /// The presented token was already spent: the caller must revoke the family.
    Reused,
}

#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// Refused with `BackendError::Duplicate` when the id or the email is taken.
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    async fn find_user(&self, id: Id) -> StoreResult<Option<User>>;
    /// `find_user` for each of `ids`, answered in the same order (one read when embedded).
    async fn find_users(&self, ids: &[Id]) -> StoreResult<Vec<Option<User>>> {
        try_join_all(ids.iter().map(|&id| self.find_user(id))).await
    }
    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<User>>;

    async fn insert_session(&self, session: &Session) -> StoreResult<()>;
    async fn find_session(&self, id: Id) -> StoreResult<Option<Session>>;
    /// Replaces `presented_jti` by `next_jti` if and only if it is the current one.
    async fn rotate_session(
        &self,
        id: Id,
        presented_jti: &str,
        next_jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<RotateOutcome>;
    async fn revoke_session(&self, id: Id) -> StoreResult<()>;
}
