//! AuthActor: registration, login, token refresh with rotation, logout. Password hashing is
//! CPU-heavy on purpose, so it runs on `PasswordHasher` threads (a `SyncArbiter` sized to the
//! cores): a login storm queues there instead of stalling the async executors serving orders.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::prelude::*;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};

use super::{ask, count_restart, guarded, MAILBOX_CAPACITY};
use crate::authenticator::Authenticator;
use crate::domain::{Email, Id, Role, User};
use crate::error::{AppError, BackendError};
use crate::messages::auth::*;
use crate::metrics::{
    backend_call, AUTH_LOGINS_TOTAL, AUTH_REGISTRATIONS_TOTAL, AUTH_TOKEN_REFRESHES_TOTAL,
    PASSWORD_HASH_SECONDS,
};
use crate::store::{RotateOutcome, Session, Store};
use crate::throttle::LoginThrottle;
use crate::tokens::{new_token_id, TokenService};

const NAME: &str = "auth";

/// Argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane).
fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid argon2 params"),
    )
}

pub fn hash_password(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(AppError::internal)
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash of a password nobody has, verified when the email is unknown so that a wrong email
/// takes as long as a wrong password and the answer can not reveal which accounts exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&new_token_id()).expect("hash decoy password"))
}

/// Hashes and verifies passwords on its own OS threads.
pub struct PasswordHasher;

impl Actor for PasswordHasher {
    type Context = SyncContext<Self>;
}

impl Handler<HashPassword> for PasswordHasher {
    type Result = Result<String, AppError>;
    fn handle(&mut self, msg: HashPassword, _: &mut SyncContext<Self>) -> Self::Result {
        let started = Instant::now();
        let hash = hash_password(&msg.password);
        metrics::histogram!(PASSWORD_HASH_SECONDS, "operation" => "hash")
            .record(started.elapsed().as_secs_f64());
        hash
    }
}

impl Handler<VerifyPassword> for PasswordHasher {
    type Result = bool;
    fn handle(&mut self, msg: VerifyPassword, _: &mut SyncContext<Self>) -> bool {
        let started = Instant::now();
        let ok = verify_password(&msg.password, &msg.hash);
        metrics::histogram!(PASSWORD_HASH_SECONDS, "operation" => "verify")
            .record(started.elapsed().as_secs_f64());
        ok
    }
}

pub fn start_password_hasher() -> Addr<PasswordHasher> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    SyncArbiter::start(threads, || PasswordHasher)
}

#[derive(Clone)]
pub struct AuthActor {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenService>,
    pub authenticator: Arc<Authenticator>,
    pub hasher: Addr<PasswordHasher>,
    pub throttle: Arc<LoginThrottle>,
}

impl Actor for AuthActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

impl Supervised for AuthActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        count_restart(NAME);
    }
}

impl AuthActor {
    /// Opens a session (one login's refresh-token family) and issues its first token pair.
    async fn open_session(&self, user: User) -> Result<Authenticated, AppError> {
        let now = crate::domain::now();
        let session = Session {
            id: Id::new(),
            user_id: user.id,
            current_jti: new_token_id(),
            expires_at: now + self.tokens.refresh_ttl(),
            revoked: false,
            created_at: now,
        };
        backend_call(
            "store",
            "insert_session",
            self.store.insert_session(&session),
        )
        .await?;
        let tokens = self
            .tokens
            .issue(user.id, user.role, session.id, &session.current_jti, now);
        Ok(Authenticated { user, tokens })
    }

    async fn hash(&self, password: String) -> Result<String, AppError> {
        self.hasher
            .send(HashPassword { password })
            .await
            .map_err(|_| AppError::Unavailable("password hasher"))?
    }

    async fn verify(&self, password: String, hash: String) -> Result<bool, AppError> {
        self.hasher
            .send(VerifyPassword { password, hash })
            .await
            .map_err(|_| AppError::Unavailable("password hasher"))
    }
}

impl Handler<Register> for AuthActor {
    type Result = ResponseActFuture<Self, Result<Authenticated, AppError>>;
    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded(NAME, async move {
            let password_hash = this.hash(msg.password).await?;
            let user = User {
                id: Id::new(),
                email: msg.email,
                name: msg.name,
                role: Role::User,
                password_hash,
                created_at: crate::domain::now(),
            };
            match backend_call("store", "insert_user", this.store.insert_user(&user)).await {
                Ok(()) => {}
                Err(BackendError::Duplicate) => {
                    metrics::counter!(AUTH_REGISTRATIONS_TOTAL, "outcome" => "email_taken")
                        .increment(1);
                    return Err(AppError::EmailTaken);
                }
                Err(e) => return Err(e.into()),
            }
            metrics::counter!(AUTH_REGISTRATIONS_TOTAL, "outcome" => "success").increment(1);
            tracing::info!(user_id = %user.id, "user registered");
            this.open_session(user).await
        })
    }
}

impl Handler<Login> for AuthActor {
    type Result = ResponseActFuture<Self, Result<Authenticated, AppError>>;
    fn handle(&mut self, msg: Login, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded(NAME, async move {
            if let Err(limited) = this.throttle.check(&msg.email, msg.client_ip).await {
                metrics::counter!(AUTH_LOGINS_TOTAL, "outcome" => "rate_limited").increment(1);
                tracing::warn!("login refused: rate limited");
                return Err(limited);
            }
            let email = Email::parse(&msg.email).ok();
            let user = match &email {
                Some(email) => {
                    backend_call(
                        "store",
                        "find_user_by_email",
                        this.store.find_user_by_email(email),
                    )
                    .await?
                }
                None => None,
            };
            let hash = user
                .as_ref()
                .map_or_else(|| decoy_hash().to_string(), |u| u.password_hash.clone());
            let password_ok = this.verify(msg.password, hash).await?;
            match user {
                Some(user) if password_ok => {
                    metrics::counter!(AUTH_LOGINS_TOTAL, "outcome" => "success").increment(1);
                    tracing::info!(user_id = %user.id, "login succeeded");
                    this.throttle.record_success(email.as_ref()).await;
                    this.open_session(user).await
                }
                _ => {
                    metrics::counter!(AUTH_LOGINS_TOTAL, "outcome" => "invalid_credentials")
                        .increment(1);
                    tracing::info!("login refused: invalid credentials");
                    this.throttle
                        .record_failure(&msg.email, msg.client_ip)
                        .await;
                    Err(AppError::InvalidCredentials)
                }
            }
        })
    }
}

impl Handler<Refresh> for AuthActor {
    type Result = ResponseActFuture<Self, Result<Authenticated, AppError>>;
    fn handle(&mut self, msg: Refresh, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded(NAME, async move {
            let refused = |outcome: &'static str| {
                metrics::counter!(AUTH_TOKEN_REFRESHES_TOTAL, "outcome" => outcome).increment(1);
                AppError::Unauthenticated("the refresh token is invalid, expired or already used")
            };
            let claims = this
                .tokens
                .verify_refresh(&msg.refresh_token)
                .map_err(|r| refused(r.as_str()))?;
            let (Ok(session_id), Ok(user_id)) =
                (claims.sid.parse::<Id>(), claims.sub.parse::<Id>())
            else {
                return Err(refused("invalid"));
            };
            let now = crate::domain::now();
            let next_jti = new_token_id();
            let expires_at = now + this.tokens.refresh_ttl();
            let outcome = backend_call(
                "store",
                "rotate_session",
                this.store
                    .rotate_session(session_id, &claims.jti, &next_jti, expires_at, now),
            )
            .await?;
            match outcome {
                RotateOutcome::Rotated => {}
                RotateOutcome::Inactive => return Err(refused("inactive")),
                RotateOutcome::Reused => {
                    // A spent token came back: someone holds a copy. End the whole family so
                    // the thief's newer tokens die with it.
                    backend_call(
                        "store",
                        "revoke_session",
                        this.store.revoke_session(session_id),
                    )
                    .await?;
                    this.authenticator.remember_revoked(session_id).await;
                    tracing::warn!(%session_id, "refresh token reused; session revoked");
                    return Err(refused("reused"));
                }
            }
            let user = backend_call("store", "find_user", this.store.find_user(user_id))
                .await?
                .ok_or_else(|| refused("unknown_user"))?;
            metrics::counter!(AUTH_TOKEN_REFRESHES_TOTAL, "outcome" => "success").increment(1);
            let tokens = this
                .tokens
                .issue(user.id, user.role, session_id, &next_jti, now);
            Ok(Authenticated { user, tokens })
        })
    }
}

impl Handler<Logout> for AuthActor {
    type Result = ResponseActFuture<Self, Result<(), AppError>>;
    fn handle(&mut self, msg: Logout, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded(NAME, async move {
            backend_call(
                "store",
                "revoke_session",
                this.store.revoke_session(msg.session_id),
            )
            .await?;
            this.authenticator.remember_revoked(msg.session_id).await;
            tracing::info!(session_id = %msg.session_id, "logged out");
            Ok(())
        })
    }
}

impl Handler<GetUser> for AuthActor {
    type Result = ResponseActFuture<Self, Result<User, AppError>>;
    fn handle(&mut self, msg: GetUser, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        guarded(NAME, async move {
            backend_call("store", "find_user", store.find_user(msg.user_id))
                .await?
                .ok_or(AppError::NotFound("user"))
        })
    }
}

/// Sends to the auth actor with backlog accounting (used by handlers).
pub async fn ask_auth<M, T>(addr: &Addr<AuthActor>, msg: M) -> Result<T, AppError>
where
    AuthActor: Handler<M>,
    M: Message<Result = Result<T, AppError>> + Send + 'static,
    T: Send + 'static,
{
    ask(NAME, addr, msg).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong horse", &a));
        assert!(!verify_password("x", "not a hash"));
    }
}
