//! The operation timeout of every backend call (`BACKEND_TIMEOUT`): no store, queue, cache or
//! mail call may outlast it, so a black-holed backend (a connection that takes bytes and never
//! answers) costs a request this long and a 503, never minutes.
//!
//! Why a process-wide setting rather than a field threaded through every actor: the bound
//! belongs to the one function every backend call already goes through
//! (`metrics::backend_call`), and each process reads its configuration once at start. Until it
//! is set (unit tests, tools) the default applies.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::BackendError;

/// The bound when `BACKEND_TIMEOUT` is not set: well past a healthy call (milliseconds) and a
/// MongoDB failover election (a few seconds is typical), well short of a client's patience.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(5);

static BACKEND_TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// Sets the bound for this process; the first call wins (a process has one configuration).
pub fn set_backend_timeout(bound: Duration) {
    let _ = BACKEND_TIMEOUT.set(bound);
}

/// The bound every backend call gets.
pub fn backend_timeout() -> Duration {
    *BACKEND_TIMEOUT.get().unwrap_or(&DEFAULT_BACKEND_TIMEOUT)
}

/// Runs `call` within `bound`; past it the call is dropped (its connection with it, so a late
/// reply can not be mistaken for the next call's) and the backend is reported unavailable.
pub async fn within<T, F>(
    backend: &'static str,
    bound: Duration,
    call: F,
) -> Result<T, BackendError>
where
    F: Future<Output = Result<T, BackendError>>,
{
    match tokio::time::timeout(bound, call).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::unavailable(
            backend,
            format!("no answer within {}", humantime::format_duration(bound)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_never_answers_is_cut_at_the_bound() {
        let never = std::future::pending::<Result<(), BackendError>>();
        let err = within("store", Duration::from_millis(20), never)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::Unavailable {
                    backend: "store",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("20ms"), "{err}");
    }

    #[tokio::test]
    async fn a_prompt_call_keeps_its_answer() {
        let ok = async { Ok::<_, BackendError>(7) };
        assert_eq!(
            within("queue", Duration::from_secs(1), ok).await.unwrap(),
            7
        );
    }
}
