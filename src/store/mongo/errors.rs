//! How the driver's errors become the store's: unreachable (worth a retry), duplicate, or
//! other; and the redaction that keeps `MONGODB_URI`'s credentials out of every error text.

use mongodb::error::{ErrorKind, WriteFailure};

use super::write_lock::LockUnavailable;
use crate::error::BackendError;

pub(super) const BACKEND: &str = "database";

/// Server error codes that mean "not reachable right now" rather than "refused": the same
/// list the driver retries reads on, plus MaxTimeMSExpired.
pub(super) const UNAVAILABLE_CODES: &[i32] = &[
    6, 7, 50, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

pub(super) const DUPLICATE_KEY: i32 = 11000;

/// Unreachable or timed out is worth a retry (503); a uniqueness violation is the caller's
/// business; anything else is a bug, a refused command or damaged data.
pub(super) fn db_error(e: mongodb::error::Error) -> BackendError {
    if let Some(lock) = e.get_custom::<LockUnavailable>() {
        // The write was never sent: the server's lock could not be had (see `write_lock`).
        return BackendError::unavailable(BACKEND, lock);
    }
    let duplicate = match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    };
    if duplicate {
        return BackendError::Duplicate;
    }
    let unavailable = match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Authentication { .. } => true,
        ErrorKind::Command(c) => UNAVAILABLE_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => UNAVAILABLE_CODES.contains(&w.code),
        _ => e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR),
    };
    if unavailable {
        BackendError::unavailable(BACKEND, e)
    } else {
        BackendError::other(BACKEND, e)
    }
}

/// Removes the URI's credentials from an error text: driver messages about a bad URI may quote
/// parts of it, and errors end up in logs.
pub(super) fn redact(e: BackendError, uri: &str) -> BackendError {
    let secrets: Vec<&str> = uri
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| {
            let mut s = vec![userinfo];
            if let Some((_, password)) = userinfo.split_once(':') {
                s.push(password);
            }
            s
        })
        .unwrap_or_default();
    let scrub = |detail: String| {
        let mut detail = detail.replace(uri, "<MONGODB_URI>");
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            detail = detail.replace(s, "***");
        }
        detail
    };
    match e {
        BackendError::Unavailable { backend, detail } => BackendError::Unavailable {
            backend,
            detail: scrub(detail),
        },
        BackendError::Other { backend, detail } => BackendError::Other {
            backend,
            detail: scrub(detail),
        },
        BackendError::Duplicate => BackendError::Duplicate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_credentials() {
        let uri = "mongodb://ann:s3cret@db.example:27017/shop";
        let e = BackendError::other(BACKEND, "bad option in ann:s3cret@db.example, s3cret");
        let text = redact(e, uri).to_string();
        assert!(!text.contains("s3cret") && !text.contains("ann:"), "{text}");
        let e = BackendError::unavailable(BACKEND, format!("cannot parse {uri}"));
        assert!(!redact(e, uri).to_string().contains("s3cret"));
    }
}
