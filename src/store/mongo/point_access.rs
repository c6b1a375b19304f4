//! Reads and writes by `_id` alone, for servers that can look documents up no other way.
//!
//! FerretDB 1.x on SQLite (what the tests and `bench/run --real` use) turns a filter into SQL
//! only when the filter is exactly `{_id: <string or ObjectId>}`. Any other filter, even
//! `{_id: {$in: [...]}}` or `{_id: X, status: "pending"}`, reads and decodes every document of
//! the collection and filters them in Go; and it uses no secondary index for a query at all.
//! A profile of FerretDB under the order load (BENCHMARKS.md, "Real backends") spent about 60 %
//! of its CPU in those scans, growing with the orders collection.
//!
//! So on such a server ([`Lookups::ByIdOnly`]) the hot paths send what it can answer cheaply:
//! one `find` by `_id` per document (concurrently), and one multi-statement `update` whose
//! statements each select one `_id`. A conditional update (a status transition, a claim)
//! becomes a read and a write by `_id` under the write lock, which every write on that server
//! takes anyway (`write_lock`): no other writer of any process can come between them.
//! On MongoDB ([`Lookups::Indexed`]) the same calls go out as one `$in` query and one
//! `updateMany`, served by the `_id` index.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::hash::Hash;

use bson::{doc, Bson, Document};
use futures_util::{stream, StreamExt, TryStreamExt};
use mongodb::Collection;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::bulk::UpdateReply;
use super::errors::db_error;
use super::MongoStore;
use crate::store::StoreResult;

/// How a server finds documents (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookups {
    /// By any indexed filter: MongoDB.
    Indexed,
    /// Only by `_id` equality without a scan: FerretDB 1.x.
    ByIdOnly,
}

/// Point reads in flight at once for one call: enough to hide the round trips of a batch (a
/// receive takes at most ten messages), few enough not to crowd the connection pool.
const CONCURRENT_POINT_READS: usize = 10;

impl MongoStore {
    /// True on a server that finds documents by `_id` alone (FerretDB 1.x).
    pub(super) fn by_id_only(&self) -> bool {
        self.lookups == Lookups::ByIdOnly
    }

    /// The documents with these ids, by id (ids not found are simply absent): one `$in` query
    /// on MongoDB, a point read per id where that is all the server does cheaply.
    pub(super) async fn find_by_ids<D, K>(
        &self,
        coll: &Collection<D>,
        ids: &[K],
        id_of: fn(&D) -> K,
    ) -> StoreResult<HashMap<K, D>>
    where
        D: DeserializeOwned + Send + Sync,
        K: Into<Bson> + Clone + Eq + Hash + Send + Sync,
    {
        let docs = if self.by_id_only() {
            find_each(coll, ids).await.map_err(db_error)?
        } else {
            let ids: Vec<Bson> = ids.iter().cloned().map(Into::into).collect();
            coll.find(doc! { "_id": { "$in": ids } })
                .await
                .map_err(db_error)?
                .try_collect()
                .await
                .map_err(db_error)?
        };
        Ok(docs.into_iter().map(|d| (id_of(&d), d)).collect())
    }

    /// Applies `update` to the documents with these ids, in one write: an `updateMany` on
    /// MongoDB, a multi-statement `update` of one `_id` per statement where that is all the
    /// server selects cheaply. Returns how many matched. Runs under the write lock where there
    /// is one.
    pub(super) async fn update_by_ids<D, K>(
        &self,
        coll: &Collection<D>,
        ids: &[K],
        update: Document,
    ) -> StoreResult<u64>
    where
        D: Send + Sync,
        K: Into<Bson> + Clone,
    {
        if ids.is_empty() {
            return Ok(0);
        }
        if !self.by_id_only() {
            let ids: Vec<Bson> = ids.iter().cloned().map(Into::into).collect();
            let done = self
                .write(coll.update_many(doc! { "_id": { "$in": ids } }, update))
                .await
                .map_err(db_error)?;
            return Ok(done.matched_count);
        }
        let command = update_each_command(coll.name(), ids, &update);
        let reply = self
            .write(self.db.run_command(command))
            .await
            .map_err(db_error)?;
        let reply = UpdateReply::parse(&reply)?;
        Ok(u64::try_from(reply.matched).unwrap_or(0))
    }
}

/// One `find` by `_id` per id, concurrently; ids not found are absent from the answer.
pub(super) async fn find_each<D, K>(
    coll: &Collection<D>,
    ids: &[K],
) -> Result<Vec<D>, mongodb::error::Error>
where
    D: DeserializeOwned + Send + Sync,
    K: Into<Bson> + Clone,
{
    let found: Vec<Option<D>> = stream::iter(ids.iter().cloned())
        .map(|id| coll.find_one(doc! { "_id": id.into() }).into_future())
        .buffered(CONCURRENT_POINT_READS)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// A raw `update` command of one statement per id, each selecting that `_id` alone.
pub(super) fn update_each_command<K>(collection: &str, ids: &[K], update: &Document) -> Document
where
    K: Into<Bson> + Clone,
{
    let statements: Vec<Document> = ids
        .iter()
        .cloned()
        .map(|id| doc! { "q": { "_id": id.into() }, "u": update.clone() })
        .collect();
    doc! { "update": collection, "updates": statements, "ordered": false }
}

/// `doc` as it reads after `$set: set`, for answers computed from a point read instead of
/// read back (the write under the lock applies exactly this).
pub(super) fn with_set<D>(doc: &D, set: &Document) -> Result<D, mongodb::error::Error>
where
    D: Serialize + DeserializeOwned,
{
    let mut raw = bson::to_document(doc).map_err(mongodb::error::Error::custom)?;
    for (field, value) in set {
        raw.insert(field.clone(), value.clone());
    }
    bson::from_document(raw).map_err(mongodb::error::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;

    #[test]
    fn every_statement_selects_one_id_alone() {
        let ids = [ObjectId::new(), ObjectId::new()];
        let command = update_each_command("orders", &ids, &doc! { "$set": { "a": 1 } });
        let statements = command.get_array("updates").unwrap();
        assert_eq!(statements.len(), 2);
        for (statement, id) in statements.iter().zip(ids) {
            let q = statement.as_document().unwrap().get_document("q").unwrap();
            assert_eq!(q, &doc! { "_id": id });
        }
        assert!(!command.get_bool("ordered").unwrap());
    }

    #[test]
    fn a_set_is_applied_as_the_server_applies_it() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct D {
            a: i32,
            b: String,
        }
        let after = with_set(
            &D {
                a: 1,
                b: "x".into(),
            },
            &doc! { "b": "y" },
        )
        .unwrap();
        assert_eq!(
            after,
            D {
                a: 1,
                b: "y".into()
            }
        );
    }
}
