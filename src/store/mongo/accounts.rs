//! Users and sessions on MongoDB. Emails are unique by index; sessions expire by a TTL index
//! where the server has them, and are purged at login where it has not.

use chrono::{DateTime, Utc};

use async_trait::async_trait;
use bson::doc;

use super::documents::*;
use super::errors::db_error;
use super::MongoStore;
use crate::domain::{Email, Id, User};
use crate::store::{Accounts, RotateOutcome, Session, StoreResult};

#[async_trait]
impl Accounts for MongoStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        let d = UserDoc {
            id: user.id.object_id(),
            email: user.email.as_str().to_owned(),
            name: user.name.clone(),
            role: user.role.as_str().to_owned(),
            password_hash: user.password_hash.clone(),
            created_at: bson_time(user.created_at),
        };
        self.write(self.users.insert_one(&d))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_user(&self, id: Id) -> StoreResult<Option<User>> {
        self.users
            .find_one(doc! { "_id": id.object_id() })
            .await
            .map_err(db_error)?
            .map(user_from_doc)
            .transpose()
    }

    /// The recipients of a batch's emails: those read in the last minutes from memory (see
    /// `recent_users`), the rest in one `find` by `_id` (a point read each on FerretDB).
    async fn find_users(&self, ids: &[Id]) -> StoreResult<Vec<Option<User>>> {
        let unknown: Vec<_> = ids
            .iter()
            .filter(|id| !self.recent_users.contains_key(*id))
            .map(|id| id.object_id())
            .collect();
        if !unknown.is_empty() {
            let found = self
                .find_by_ids(&self.users, &unknown, |d: &UserDoc| d.id)
                .await?;
            for d in found.into_values() {
                let user = user_from_doc(d)?;
                self.recent_users.insert(user.id, user);
            }
        }
        // A user asked for twice is answered twice; one not found is `None`.
        Ok(ids.iter().map(|id| self.recent_users.get(id)).collect())
    }

    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        self.users
            .find_one(doc! { "email": email.as_str() })
            .await
            .map_err(db_error)?
            .map(user_from_doc)
            .transpose()
    }

    async fn insert_session(&self, session: &Session) -> StoreResult<()> {
        if !self.ttl_indexes {
            // Without a TTL index nothing else removes expired sessions; a login is a rare
            // enough write to carry the purge, and the index on expiresAt keeps it cheap.
            self.write(
                self.sessions
                    .delete_many(doc! { "expiresAt": { "$lte": bson_time(Utc::now()) } }),
            )
            .await
            .map_err(db_error)?;
        }
        let d = SessionDoc {
            id: session.id.object_id(),
            user_id: session.user_id.object_id(),
            current_jti: session.current_jti.clone(),
            expires_at: bson_time(session.expires_at),
            revoked: session.revoked,
            created_at: bson_time(session.created_at),
        };
        self.write(self.sessions.insert_one(&d))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_session(&self, id: Id) -> StoreResult<Option<Session>> {
        self.sessions
            .find_one(doc! { "_id": id.object_id() })
            .await
            .map_err(db_error)?
            .map(session_from_doc)
            .transpose()
    }

    async fn rotate_session(
        &self,
        id: Id,
        presented_jti: &str,
        next_jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<RotateOutcome> {
        let rotated = self
            .write(self.sessions.update_one(
                doc! {
                    "_id": id.object_id(),
                    "currentJti": presented_jti,
                    "revoked": false,
                    "expiresAt": { "$gt": bson_time(now) },
                },
                doc! { "$set": { "currentJti": next_jti, "expiresAt": bson_time(expires_at) } },
            ))
            .await
            .map_err(db_error)?;
        if rotated.matched_count == 1 {
            return Ok(RotateOutcome::Rotated);
        }
        // Not rotated: either the session can not be used at all, or it is alive and the
        // presented token is not its current one, which is reuse. The read comes after the
        // failed update, so a session that was active then and is revoked now reads as
        // inactive: never a false accusation of reuse against a session already closed.
        let session = self.find_session(id).await?;
        Ok(match session {
            Some(s) if !s.revoked && s.expires_at > now => RotateOutcome::Reused,
            _ => RotateOutcome::Inactive,
        })
    }

    async fn revoke_session(&self, id: Id) -> StoreResult<()> {
        self.write(self.sessions.update_one(
            doc! { "_id": id.object_id() },
            doc! { "$set": { "revoked": true } },
        ))
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
