//! AuthActor: registration, login, token refresh with rotation, logout. Password hashing is
//! CPU-heavy on purpose, so it runs on `PasswordHasher` threads (a `SyncArbiter` sized to the
//! cores, at a lower priority): a login storm queues there instead of stalling the async
//! executors serving orders, and yields the cores to them.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::prelude::*;
use tracing::Instrument;

use super::{ask, count_restart, guarded_as, MAILBOX_CAPACITY};
use crate::authenticator::Authenticator;
use crate::domain::{Email, Id, Role, User};
use crate::error::{AppError, BackendError};
use crate::messages::auth::*;
use crate::metrics::{
    backend_call, AUTH_LOGINS_TOTAL, AUTH_REGISTRATIONS_TOTAL, AUTH_TOKEN_REFRESHES_TOTAL,
    PASSWORD_HASH_SECONDS,
};
use crate::password::{hash_password, PasswordArena};
use crate::refresh_reuse::{RefreshReuse, Successor};
use crate::round_trips::WorkPath;
use crate::store::{Accounts, RotateOutcome, Session};
use crate::throttle::LoginThrottle;
use crate::tokens::{new_token_id, TokenService};

const NAME: &str = "auth";

/// A hash of a password nobody has, verified when the email is unknown so that a wrong email
/// takes as long as a wrong password and the answer can not reveal which accounts exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&new_token_id()).expect("hash decoy password"))
}

/// Hashes and verifies passwords on its own OS threads, each with its own reusable argon2
/// memory.
#[derive(Default)]
pub struct PasswordHasher {
    arena: PasswordArena,
}

impl Actor for PasswordHasher {
    type Context = SyncContext<Self>;
}

impl Handler<HashPassword> for PasswordHasher {
    type Result = Result<String, AppError>;
    fn handle(&mut self, msg: HashPassword, _: &mut SyncContext<Self>) -> Self::Result {
        let started = Instant::now();
        let hash = self.arena.hash(&msg.password);
        metrics::histogram!(PASSWORD_HASH_SECONDS, "operation" => "hash")
            .record(started.elapsed().as_secs_f64());
        hash
    }
}

impl Handler<VerifyPassword> for PasswordHasher {
    type Result = bool;
    fn handle(&mut self, msg: VerifyPassword, _: &mut SyncContext<Self>) -> bool {
        let started = Instant::now();
        let ok = self.arena.verify(&msg.password, &msg.hash);
        metrics::histogram!(PASSWORD_HASH_SECONDS, "operation" => "verify")
            .record(started.elapsed().as_secs_f64());
        ok
    }
}

/// How much lower than the rest of the service the hashing threads run (a Unix nice value).
/// A login storm must not take the cores from order traffic: at nice 10 the scheduler gives a
/// busy hashing thread about a tenth of a core that other threads want, and all of an idle one.
const HASHER_NICENESS: i32 = 10;

/// One hashing thread per core, each at a lower priority than the rest of the service: logins
/// use every core the service leaves idle, and yield them when orders need them.
pub fn start_password_hasher() -> Addr<PasswordHasher> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // The factory runs on each new hashing thread, so the priority applies to that thread.
    SyncArbiter::start(threads, || {
        lower_this_threads_priority(HASHER_NICENESS);
        PasswordHasher::default()
    })
}

/// Linux gives each thread its own nice value; elsewhere this does nothing.
fn lower_this_threads_priority(niceness: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only reads its arguments; `who = 0` is the calling thread.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, niceness) };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not lower the password hashers' priority; logins compete with orders"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = niceness;
}

#[derive(Clone)]
pub struct AuthActor {
    pub accounts: Arc<dyn Accounts>,
    pub tokens: Arc<TokenService>,
    pub authenticator: Arc<Authenticator>,
    pub hasher: Addr<PasswordHasher>,
    pub throttle: Arc<LoginThrottle>,
    pub reuse: Arc<RefreshReuse>,
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
            self.accounts.insert_session(&session),
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
            .instrument(crate::telemetry::spans::password("hash"))
            .await
            .map_err(|_| AppError::Unavailable("password hasher"))?
    }

    async fn verify(&self, password: String, hash: String) -> Result<bool, AppError> {
        self.hasher
            .send(VerifyPassword { password, hash })
            .instrument(crate::telemetry::spans::password("verify"))
            .await
            .map_err(|_| AppError::Unavailable("password hasher"))
    }
}

impl Handler<Register> for AuthActor {
    type Result = ResponseActFuture<Self, Result<Authenticated, AppError>>;
    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            let password_hash = this.hash(msg.password).await?;
            let user = User {
                id: Id::new(),
                email: msg.email,
                name: msg.name,
                role: Role::User,
                password_hash,
                created_at: crate::domain::now(),
            };
            match backend_call("store", "insert_user", this.accounts.insert_user(&user)).await {
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
        guarded_as(NAME, WorkPath::Request, async move {
            if let Err(limited) = this.throttle.admit(&msg.email, msg.client_ip).await {
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
                        this.accounts.find_user_by_email(email),
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
                    this.throttle.record_failure(msg.client_ip).await;
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
        guarded_as(NAME, WorkPath::Request, async move {
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
            // Every refresh of this token within the reuse interval rotates to the same pair.
            let next = this
                .reuse
                .successor(&claims.jti, Successor::fresh(now))
                .await;
            let expires_at = next.issued_at + this.tokens.refresh_ttl();
            let outcome = backend_call(
                "store",
                "rotate_session",
                this.accounts
                    .rotate_session(session_id, &claims.jti, &next.jti, expires_at, now),
            )
            .await?;
            let outcome = match outcome {
                RotateOutcome::Rotated => "success",
                RotateOutcome::Inactive => {
                    // Perhaps a retry after the revocation below answered 503: finish it.
                    this.authenticator.remember_revoked(session_id).await?;
                    return Err(refused("inactive"));
                }
                RotateOutcome::Reused => {
                    let session = backend_call(
                        "store",
                        "find_session",
                        this.accounts.find_session(session_id),
                    )
                    .await?;
                    let current = session.as_ref().map_or("", |s| s.current_jti.as_str());
                    if !this.reuse.may_reissue(&next, current, now) {
                        this.revoke_reused(session_id).await?;
                        return Err(refused("reused"));
                    }
                    // A retry, or a second tab, within the interval: the same pair again.
                    "reissued"
                }
            };
            let user = backend_call("store", "find_user", this.accounts.find_user(user_id))
                .await?
                .ok_or_else(|| refused("unknown_user"))?;
            metrics::counter!(AUTH_TOKEN_REFRESHES_TOTAL, "outcome" => outcome).increment(1);
            let tokens =
                this.tokens
                    .issue(user.id, user.role, session_id, &next.jti, next.issued_at);
            Ok(Authenticated { user, tokens })
        })
    }
}

impl AuthActor {
    /// A spent token came back after its reuse interval: someone holds a copy. End the whole
    /// family so the thief's newer tokens die with it, everywhere at once or not at all (503).
    async fn revoke_reused(&self, session_id: Id) -> Result<(), AppError> {
        backend_call(
            "store",
            "revoke_session",
            self.accounts.revoke_session(session_id),
        )
        .await?;
        self.authenticator.remember_revoked(session_id).await?;
        tracing::warn!(%session_id, "refresh token reused; session revoked");
        Ok(())
    }
}

impl Handler<Logout> for AuthActor {
    type Result = ResponseActFuture<Self, Result<(), AppError>>;
    fn handle(&mut self, msg: Logout, _: &mut Context<Self>) -> Self::Result {
        let this = self.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            // Both steps are idempotent, so a retry after a 503 completes the logout.
            backend_call(
                "store",
                "revoke_session",
                this.accounts.revoke_session(msg.session_id),
            )
            .await?;
            this.authenticator.remember_revoked(msg.session_id).await?;
            tracing::info!(session_id = %msg.session_id, "logged out");
            Ok(())
        })
    }
}

impl Handler<GetUser> for AuthActor {
    type Result = ResponseActFuture<Self, Result<User, AppError>>;
    fn handle(&mut self, msg: GetUser, _: &mut Context<Self>) -> Self::Result {
        let accounts = self.accounts.clone();
        guarded_as(NAME, WorkPath::Request, async move {
            backend_call("store", "find_user", accounts.find_user(msg.user_id))
                .await?
                .ok_or(AppError::NotFound("user"))
        })
    }
}

/// Sends to the auth actor with backlog accounting (used by handlers).
pub async fn ask_auth<M, T>(addr: &Addr<AuthActor>, msg: M) -> Result<T, AppError>
where
    AuthActor: Handler<crate::actors::traced::Traced<M>>,
    M: Message<Result = Result<T, AppError>> + Send + 'static,
    T: Send + 'static,
{
    ask(NAME, addr, msg).await
}
