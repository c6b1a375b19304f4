//! Checks bearer tokens on every authenticated request. Runs on the HTTP worker threads (a
//! signature check is cheap and parallel); the revocation check reads the session through the
//! cache, which logout and token-reuse detection overwrite, so a revoked session is refused at
//! once (across processes when the cache is Redis).

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{session_key, Cache};
use crate::domain::Id;
use crate::error::AppError;
use crate::metrics::{
    backend_call, AUTH_TOKENS_REJECTED_TOTAL, CACHE_ERRORS_TOTAL, CACHE_HITS_TOTAL,
    CACHE_MISSES_TOTAL,
};
use crate::store::Accounts;
use crate::tokens::{Principal, TokenService};

const ACTIVE: &str = "active";
const REVOKED: &str = "revoked";

pub struct Authenticator {
    tokens: Arc<TokenService>,
    accounts: Arc<dyn Accounts>,
    cache: Arc<dyn Cache>,
}

impl Authenticator {
    pub fn new(
        tokens: Arc<TokenService>,
        accounts: Arc<dyn Accounts>,
        cache: Arc<dyn Cache>,
    ) -> Self {
        Authenticator {
            tokens,
            accounts,
            cache,
        }
    }

    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, AppError> {
        let principal = self.tokens.verify_access(bearer).map_err(|r| {
            metrics::counter!(AUTH_TOKENS_REJECTED_TOTAL, "reason" => r.as_str()).increment(1);
            AppError::Unauthenticated(match r {
                crate::tokens::Rejection::Expired => "the access token has expired",
                _ => "the access token is invalid",
            })
        })?;
        if self.session_active(principal.session_id).await? {
            Ok(principal)
        } else {
            metrics::counter!(AUTH_TOKENS_REJECTED_TOTAL, "reason" => "revoked").increment(1);
            Err(AppError::Unauthenticated(
                "the session has ended; log in again",
            ))
        }
    }

    async fn session_active(&self, session_id: Id) -> Result<bool, AppError> {
        let key = session_key(session_id);
        match self.cache.get(&key).await {
            Ok(Some(v)) => {
                metrics::counter!(CACHE_HITS_TOTAL, "cache" => "session").increment(1);
                return Ok(v == ACTIVE);
            }
            Ok(None) => metrics::counter!(CACHE_MISSES_TOTAL, "cache" => "session").increment(1),
            Err(e) => {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "session", "operation" => "get")
                    .increment(1);
                tracing::warn!(error = %e, "session cache read failed; using the store");
            }
        }
        let session = backend_call(
            "store",
            "find_session",
            self.accounts.find_session(session_id),
        )
        .await?;
        let active = session.is_some_and(|s| !s.revoked && s.expires_at > chrono::Utc::now());
        // Fill only an empty slot: a logout that raced us has written `revoked` and must win.
        let value = if active { ACTIVE } else { REVOKED };
        if let Err(e) = self
            .cache
            .set_if_absent(&key, value, self.remember_for())
            .await
        {
            metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "session", "operation" => "set")
                .increment(1);
            tracing::warn!(error = %e, "session cache write failed");
        }
        Ok(active)
    }

    /// Marks a session revoked in the cache, for as long as any access token of it can live.
    pub async fn remember_revoked(&self, session_id: Id) {
        if let Err(e) = self
            .cache
            .set(&session_key(session_id), REVOKED, self.remember_for())
            .await
        {
            metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "session", "operation" => "set")
                .increment(1);
            // Still safe: without the cache entry the store is read, and it says revoked.
            let _ = self.cache.delete(&session_key(session_id)).await;
            tracing::warn!(error = %e, "could not cache a session revocation");
        }
    }

    fn remember_for(&self) -> Duration {
        self.tokens.access_ttl() + Duration::from_secs(60)
    }
}
