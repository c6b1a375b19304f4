//! The refresh reuse interval. A client that lost the response to its refresh retries with the
//! same token; two browser tabs refresh at once. Without an interval the second presentation
//! looks exactly like a thief replaying a spent token, and revoking the family logs the user out
//! and kills the pair the first request just got. So, as the well-known identity providers do
//! (Auth0's reuse interval, Okta's grace period): for `REFRESH_REUSE_INTERVAL` after a token is
//! spent, presenting it again returns the *same* new pair instead of revoking. Later, reuse
//! revokes the family as before.
//!
//! Every refresh of one token agrees on one successor (the new pair's refresh-token id and issue
//! time) through a fill-only entry in the security state (see `cache::security`): the first to
//! write it wins, the others read it. Tokens are issued deterministically from the successor, so
//! every one of them answers with byte-identical tokens. If the state can not be reached, each
//! refresh picks its own successor and reuse is detected as without an interval.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::cache::Cache;
use crate::metrics::CACHE_ERRORS_TOTAL;
use crate::tokens::new_token_id;

/// The pair a refresh of one token issues: its refresh-token id and issue time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Successor {
    pub jti: String,
    pub issued_at: DateTime<Utc>,
}

impl Successor {
    pub fn fresh(now: DateTime<Utc>) -> Self {
        // Whole seconds: the tokens carry `iat` in seconds, and the pair must be reproducible.
        let issued_at = Utc
            .timestamp_opt(now.timestamp(), 0)
            .single()
            .unwrap_or(now);
        Successor {
            jti: new_token_id(),
            issued_at,
        }
    }

    fn encode(&self) -> String {
        format!("{}|{}", self.jti, self.issued_at.timestamp())
    }

    fn decode(value: &str) -> Option<Self> {
        let (jti, secs) = value.split_once('|')?;
        Some(Successor {
            jti: jti.to_string(),
            issued_at: Utc.timestamp_opt(secs.parse().ok()?, 0).single()?,
        })
    }
}

pub struct RefreshReuse {
    state: Arc<dyn Cache>,
    interval: Duration,
}

impl RefreshReuse {
    pub fn new(state: Arc<dyn Cache>, interval: Duration) -> Self {
        RefreshReuse { state, interval }
    }

    fn key(spent_jti: &str) -> String {
        format!("refresh-successor:{spent_jti}")
    }

    /// The successor of the token `spent_jti`: the one another refresh of it chose within the
    /// interval, or else `fresh`, now recorded as the one.
    pub async fn successor(&self, spent_jti: &str, fresh: Successor) -> Successor {
        if self.interval.is_zero() {
            return fresh;
        }
        let key = Self::key(spent_jti);
        let chosen = async {
            self.state
                .set_if_absent(&key, &fresh.encode(), self.interval)
                .await?;
            self.state.get(&key).await
        }
        .await;
        match chosen {
            Ok(Some(value)) => Successor::decode(&value).unwrap_or(fresh),
            Ok(None) => fresh,
            Err(e) => {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "refresh_reuse", "operation" => "set")
                    .increment(1);
                tracing::warn!(error = %e, "refresh reuse interval unavailable; reuse revokes");
                fresh
            }
        }
    }

    /// Whether a refresh that found its token already spent may answer with `successor`'s pair:
    /// the session moved to exactly that successor, within the interval. A session that has
    /// rotated again since, or a successor older than the interval, is reuse.
    pub fn may_reissue(
        &self,
        successor: &Successor,
        current_jti: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let age = (now - successor.issued_at).to_std().unwrap_or_default();
        !self.interval.is_zero() && current_jti == successor.jti && age <= self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::memory::MemoryCache;

    fn reuse(interval: Duration) -> RefreshReuse {
        RefreshReuse::new(Arc::new(MemoryCache::new(1 << 20)), interval)
    }

    #[tokio::test]
    async fn every_refresh_of_one_token_gets_the_first_successor() {
        let r = reuse(Duration::from_secs(10));
        let now = Utc::now();
        let first = r.successor("a", Successor::fresh(now)).await;
        let second = r.successor("a", Successor::fresh(now)).await;
        assert_eq!(first, second);
        assert_ne!(r.successor("b", Successor::fresh(now)).await, first);
        assert!(r.may_reissue(&first, &first.jti, now));
        assert!(!r.may_reissue(&first, "rotated-again", now));
        let later = now + chrono::Duration::seconds(11);
        assert!(!r.may_reissue(&first, &first.jti, later));
    }

    #[tokio::test]
    async fn a_zero_interval_gives_every_refresh_its_own_successor() {
        let r = reuse(Duration::ZERO);
        let now = Utc::now();
        let first = r.successor("a", Successor::fresh(now)).await;
        assert_ne!(r.successor("a", Successor::fresh(now)).await, first);
        assert!(!r.may_reissue(&first, &first.jti, now));
    }
}
