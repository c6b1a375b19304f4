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
        let principal = self.verify_signature(bearer)?;
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

    /// Makes a revocation the store already holds take effect everywhere at once: every process
    /// checks sessions through the cache, so its entry must say `revoked`, or be gone (a miss reads
    /// the store). If neither can be written, some process may go on honouring the session from a
    /// cached `active` for up to [`Self::remember_for`], so the caller must fail (503) and the
    /// client retry; writing `revoked` again is harmless.
    pub async fn remember_revoked(&self, session_id: Id) -> Result<(), AppError> {
        let key = session_key(session_id);
        let Err(e) = self.cache.set(&key, REVOKED, self.remember_for()).await else {
            return Ok(());
        };
        metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "session", "operation" => "set")
            .increment(1);
        if self.cache.delete(&key).await.is_ok() {
            tracing::warn!(error = %e, "could not cache a session revocation; removed its entry");
            return Ok(());
        }
        metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "session", "operation" => "delete")
            .increment(1);
        tracing::error!(error = %e, %session_id, "a session revocation could not reach the cache");
        Err(AppError::Unavailable("cache"))
    }

    /// The principal of a correctly signed, unexpired access token, whether or not its session
    /// has ended: logout accepts it, so that logging out again (a retry) is harmless.
    pub fn verify_signature(&self, bearer: &str) -> Result<Principal, AppError> {
        self.tokens.verify_access(bearer).map_err(|r| {
            metrics::counter!(AUTH_TOKENS_REJECTED_TOTAL, "reason" => r.as_str()).increment(1);
            AppError::Unauthenticated(match r {
                crate::tokens::Rejection::Expired => "the access token has expired",
                _ => "the access token is invalid",
            })
        })
    }

    fn remember_for(&self) -> Duration {
        self.tokens.access_ttl() + Duration::from_secs(60)
    }
}
