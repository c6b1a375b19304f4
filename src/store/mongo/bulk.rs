//! Batched writes with an outcome per document: what lets concurrent orders share a round trip
//! (one `insertMany`, one multi-statement `update`) while each keeps an answer of its own, as the
//! embedded store's group commit does (`crate::store::sqlite::group_commit`).

use bson::{doc, Document};
use mongodb::error::ErrorKind;

use super::errors::{db_error, BACKEND, DUPLICATE_KEY};
use super::MongoStore;
use crate::error::BackendError;
use crate::store::StoreResult;

/// Each document's outcome of an unordered `insertMany`: `Ok`, or `Duplicate` (or another
/// refusal) for the ones the server refused by index. `Err` when the batch as a whole failed
/// (unreachable, write concern): nothing is known about any document then.
pub(super) fn insert_many_outcomes<T>(
    result: Result<T, mongodb::error::Error>,
    count: usize,
) -> Result<Vec<Result<(), BackendError>>, BackendError> {
    let e = match result {
        Ok(_) => return Ok(vec![Ok(()); count]),
        Err(e) => e,
    };
    let ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
        return Err(db_error(e));
    };
    if failure.write_concern_error.is_some() {
        return Err(db_error(e));
    }
    let mut outcomes = vec![Ok(()); count];
    for w in failure.write_errors.iter().flatten() {
        let refused = if w.code == DUPLICATE_KEY {
            BackendError::Duplicate
        } else {
            BackendError::other(super::errors::BACKEND, &w.message)
        };
        if let Some(slot) = outcomes.get_mut(w.index) {
            *slot = Err(refused);
        }
    }
    Ok(outcomes)
}

/// What a raw multi-statement `update` command answered: how many statements matched, and the
/// index and code of each refused one. An error when the command itself failed.
pub(super) struct UpdateReply {
    pub(super) matched: i64,
    pub(super) refused: Vec<(usize, i32)>,
}

impl UpdateReply {
    pub(super) fn parse(reply: &Document) -> Result<UpdateReply, BackendError> {
        let matched = reply
            .get_i32("n")
            .map(i64::from)
            .or_else(|_| reply.get_i64("n"))
            .unwrap_or(0);
        let mut refused = Vec::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors.iter().filter_map(|e| e.as_document()) {
                let index = e.get_i32("index").unwrap_or(-1);
                let code = e.get_i32("code").unwrap_or(0);
                refused.push((usize::try_from(index).unwrap_or(usize::MAX), code));
            }
        }
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(BackendError::unavailable(
                super::errors::BACKEND,
                format!("write concern: {wce}"),
            ));
        }
        Ok(UpdateReply { matched, refused })
    }
}

impl MongoStore {
    /// Runs unordered update statements on `collection` in one command, under the write lock
    /// where there is one; how many matched. A refused statement is an error naming `what`:
    /// the callers' statements are never expected to be refused.
    pub(super) async fn run_update_statements(
        &self,
        collection: &str,
        statements: Vec<Document>,
        what: &str,
    ) -> StoreResult<i64> {
        if statements.is_empty() {
            return Ok(0);
        }
        let command = doc! { "update": collection, "updates": statements, "ordered": false };
        let reply = self
            .write(self.db.run_command(command))
            .await
            .map_err(db_error)?;
        let reply = UpdateReply::parse(&reply)?;
        if let Some(&(index, code)) = reply.refused.first() {
            return Err(BackendError::other(
                BACKEND,
                format!("{what} (statement {index}) was refused with code {code}"),
            ));
        }
        Ok(reply.matched)
    }
}
