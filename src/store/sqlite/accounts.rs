//! Users and sessions on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::rows::{conversion_error, ts, Ts};
use super::SqliteStore;
use crate::domain::{Email, Id, Role, User};
use crate::store::{Accounts, RotateOutcome, Session, StoreResult};

// Column lists, spelled once so every query and its row reader agree on the order.
macro_rules! user_columns {
    () => {
        "id, email, name, role, password_hash, created_at"
    };
}
macro_rules! session_columns {
    () => {
        "id, user_id, current_jti, expires_at, revoked, created_at"
    };
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    let email: String = r.get(1)?;
    let role: String = r.get(3)?;
    Ok(User {
        id: r.get(0)?,
        email: Email::parse(&email).map_err(|e| conversion_error(1, e))?,
        name: r.get(2)?,
        role: Role::parse(&role)
            .ok_or_else(|| conversion_error(3, format!("unknown role {role:?}")))?,
        password_hash: r.get(4)?,
        created_at: r.get::<_, Ts>(5)?.0,
    })
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        user_id: r.get(1)?,
        current_jti: r.get(2)?,
        expires_at: r.get::<_, Ts>(3)?.0,
        revoked: r.get(4)?,
        created_at: r.get::<_, Ts>(5)?.0,
    })
}

fn load_user(conn: &Connection, id: Id) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = ?1"
    ))?
    .query_row([id], user_from_row)
    .optional()
}

#[async_trait]
impl Accounts for SqliteStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        let user = user.clone();
        self.db
            .write(move |c| {
                c.prepare_cached(concat!(
                    "INSERT INTO users (",
                    user_columns!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ))?
                .execute(params![
                    user.id,
                    user.email.as_str(),
                    user.name,
                    user.role.as_str(),
                    user.password_hash,
                    ts(user.created_at)
                ])?;
                Ok(())
            })
            .await
    }

    async fn find_user(&self, id: Id) -> StoreResult<Option<User>> {
        self.db.read(move |c| load_user(c, id)).await
    }

    async fn find_users(&self, ids: &[Id]) -> StoreResult<Vec<Option<User>>> {
        let ids = ids.to_vec();
        self.db
            .read(move |c| ids.into_iter().map(|id| load_user(c, id)).collect())
            .await
    }

    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        let email = email.as_str().to_owned();
        self.db
            .read(move |c| {
                c.prepare_cached(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE email = ?1"
                ))?
                .query_row([email], user_from_row)
                .optional()
            })
            .await
    }

    async fn insert_session(&self, session: &Session) -> StoreResult<()> {
        let s = session.clone();
        self.db
            .write(move |c| {
                c.prepare_cached(concat!(
                    "INSERT INTO sessions (",
                    session_columns!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ))?
                .execute(params![
                    s.id,
                    s.user_id,
                    s.current_jti,
                    ts(s.expires_at),
                    s.revoked,
                    ts(s.created_at)
                ])?;
                Ok(())
            })
            .await
    }

    async fn find_session(&self, id: Id) -> StoreResult<Option<Session>> {
        self.db
            .read(move |c| {
                c.prepare_cached(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM sessions WHERE id = ?1"
                ))?
                .query_row([id], session_from_row)
                .optional()
            })
            .await
    }

    async fn rotate_session(
        &self,
        id: Id,
        presented_jti: &str,
        next_jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<RotateOutcome> {
        let (presented, next) = (presented_jti.to_owned(), next_jti.to_owned());
        self.db
            .write(move |c| {
                let now = ts(now);
                let rotated = c
                    .prepare_cached(
                        "UPDATE sessions SET current_jti = ?1, expires_at = ?2 \
                         WHERE id = ?3 AND current_jti = ?4 AND revoked = 0 AND expires_at > ?5",
                    )?
                    .execute(params![next, ts(expires_at), id, presented, now])?;
                if rotated == 1 {
                    return Ok(RotateOutcome::Rotated);
                }
                // Same transaction as the update: the session can not change between the two.
                let active = c
                    .prepare_cached(
                        "SELECT revoked = 0 AND expires_at > ?2 FROM sessions WHERE id = ?1",
                    )?
                    .query_row(params![id, now], |r| r.get::<_, bool>(0))
                    .optional()?;
                Ok(match active {
                    Some(true) => RotateOutcome::Reused,
                    Some(false) | None => RotateOutcome::Inactive,
                })
            })
            .await
    }

    async fn revoke_session(&self, id: Id) -> StoreResult<()> {
        self.db
            .write(move |c| {
                c.prepare_cached("UPDATE sessions SET revoked = 1 WHERE id = ?1")?
                    .execute([id])?;
                Ok(())
            })
            .await
    }
}
