//! Login throttling. Failed logins are counted per email and per client address in fixed
//! windows; past a limit, logins are answered 429 with `Retry-After` until the window ends.
//! Every email is counted alike, whether an account exists or not, so a 429 tells nothing about
//! which accounts exist. Successful logins only count towards a generous per-address rate, so a
//! load tester or an office behind one NAT address is not throttled by other people's typos.
//!
//! Counters live in the cache: shared by every API process when it is Redis. If the cache fails,
//! logins are allowed (and the failure counted): throttling must not take authentication down.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cache;
use crate::config::LoginLimits;
use crate::domain::Email;
use crate::error::AppError;
use crate::metrics::CACHE_ERRORS_TOTAL;

pub struct LoginThrottle {
    cache: Arc<dyn Cache>,
    limits: LoginLimits,
}

const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);

impl LoginThrottle {
    pub fn new(cache: Arc<dyn Cache>, limits: LoginLimits) -> Self {
        LoginThrottle { cache, limits }
    }

    fn email_key(email: &str) -> String {
        // Hashed, so the cache holds no addresses of people.
        use sha2::{Digest, Sha256};
        format!(
            "login-failures:email:{}",
            hex::encode(&Sha256::digest(email.trim().to_lowercase().as_bytes())[..16])
        )
    }

    fn ip_failures_key(ip: IpAddr) -> String {
        format!("login-failures:ip:{ip}")
    }

    fn ip_attempts_key(ip: IpAddr) -> String {
        format!("login-attempts:ip:{ip}")
    }

    /// Admits a login attempt, or refuses it when its email or address is over a limit.
    ///
    /// The attempt is counted as a failure of its email *before* its password is verified, in
    /// one atomic increment that also reads the count: concurrent wrong guesses for one email
    /// can not all pass a check made before any of them is recorded, so at most
    /// `max_failures_per_email` of them are ever verified in a window, however many arrive at
    /// once. A correct password then clears the count ([`Self::record_success`]). The price:
    /// more than that many logins of one email *in flight at once* are refused too, which no
    /// legitimate client does.
    ///
    /// The per-address failure limit is still read before and written after verification:
    /// pre-counting it would refuse an office's concurrent good logins. Its slack is bounded by
    /// the per-address attempt rate, which is counted atomically up front.
    pub async fn admit(&self, email: &str, ip: Option<IpAddr>) -> Result<(), AppError> {
        let window = self.limits.failure_window;
        if let Some(ip) = ip {
            let attempts = self.bump(&Self::ip_attempts_key(ip), ATTEMPT_WINDOW).await;
            if attempts > self.limits.max_attempts_per_ip_per_minute {
                return Err(AppError::RateLimited {
                    retry_after: ATTEMPT_WINDOW,
                });
            }
            if self.count(&Self::ip_failures_key(ip)).await >= self.limits.max_failures_per_ip {
                return Err(AppError::RateLimited {
                    retry_after: window,
                });
            }
        }
        if self.bump(&Self::email_key(email), window).await > self.limits.max_failures_per_email {
            return Err(AppError::RateLimited {
                retry_after: window,
            });
        }
        Ok(())
    }

    /// A wrong password: its email's failure was counted by [`Self::admit`] already.
    pub async fn record_failure(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.bump(&Self::ip_failures_key(ip), self.limits.failure_window)
                .await;
        }
    }

    /// A correct password clears the email's failures (the address's stay: they may be
    /// someone else's guesses from the same place).
    pub async fn record_success(&self, email: Option<&Email>) {
        if let Some(email) = email {
            if self
                .cache
                .delete(&Self::email_key(email.as_str()))
                .await
                .is_err()
            {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "login_throttle", "operation" => "delete").increment(1);
            }
        }
    }

    async fn count(&self, key: &str) -> u64 {
        match self.cache.get(key).await {
            Ok(v) => v.and_then(|v| v.parse().ok()).unwrap_or(0),
            Err(e) => {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "login_throttle", "operation" => "get").increment(1);
                tracing::warn!(error = %e, "login throttle could not read a counter; allowing");
                0
            }
        }
    }

    async fn bump(&self, key: &str, window: Duration) -> u64 {
        match self.cache.increment(key, window).await {
            Ok(n) => n,
            Err(e) => {
                metrics::counter!(CACHE_ERRORS_TOTAL, "cache" => "login_throttle", "operation" => "increment").increment(1);
                tracing::warn!(error = %e, "login throttle could not count; allowing");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::memory::MemoryCache;

    fn throttle(per_email: u64, per_ip: u64, attempts: u64) -> LoginThrottle {
        LoginThrottle::new(
            Arc::new(MemoryCache::new(1 << 20)),
            LoginLimits {
                max_failures_per_email: per_email,
                max_failures_per_ip: per_ip,
                failure_window: Duration::from_secs(900),
                max_attempts_per_ip_per_minute: attempts,
            },
        )
    }

    #[tokio::test]
    async fn failures_per_email_lock_that_email_only() {
        let t = throttle(3, 100, 1000);
        let ip = Some("10.0.0.1".parse().unwrap());
        for email in ["a@x.com", "A@x.com", " a@x.com"] {
            t.admit(email, ip).await.unwrap();
            t.record_failure(ip).await;
        }
        assert!(matches!(
            t.admit("a@x.com", ip).await,
            Err(AppError::RateLimited { .. })
        ));
        t.admit("b@x.com", ip).await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_attempts_for_one_email_are_admitted_up_to_the_limit_only() {
        let t = Arc::new(throttle(5, 1000, 1000));
        let tries = (0..48).map(|_| {
            let t = t.clone();
            tokio::spawn(async move { t.admit("a@x.com", None).await.is_ok() })
        });
        let mut admitted = 0;
        for tried in tries {
            admitted += usize::from(tried.await.unwrap());
        }
        assert_eq!(admitted, 5);
    }

    #[tokio::test]
    async fn failures_per_address_lock_the_address() {
        let t = throttle(100, 2, 1000);
        let ip = Some("10.0.0.2".parse().unwrap());
        t.record_failure(ip).await;
        t.record_failure(ip).await;
        assert!(matches!(
            t.admit("c@x.com", ip).await,
            Err(AppError::RateLimited { .. })
        ));
        t.admit("c@x.com", Some("10.0.0.3".parse().unwrap()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn successful_logins_only_meet_the_generous_attempt_rate() {
        let t = throttle(1, 1, 5);
        let ip = Some("10.0.0.4".parse().unwrap());
        for i in 0..5 {
            t.admit(&format!("u{i}@x.com"), ip).await.unwrap();
        }
        assert!(matches!(
            t.admit("u9@x.com", ip).await,
            Err(AppError::RateLimited { .. })
        ));
    }
}
