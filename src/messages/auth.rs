//! AuthActor's inbox, and the password hasher's (a thread pool behind AuthActor).

use actix::Message;

use crate::domain::{Email, Id, User};
use crate::error::AppError;
use crate::tokens::TokenPair;

/// A successful registration, login or refresh: the account and a fresh token pair.
#[derive(Debug)]
pub struct Authenticated {
    pub user: User,
    pub tokens: TokenPair,
}

#[derive(Message)]
#[rtype(result = "Result<Authenticated, AppError>")]
pub struct Register {
    pub email: Email,
    pub password: String,
    pub name: String,
}

/// The email is raw: a malformed one is answered like an unknown one (401), not with a 400
/// that would tell an attacker which inputs reach the account lookup.
#[derive(Message)]
#[rtype(result = "Result<Authenticated, AppError>")]
pub struct Login {
    pub email: String,
    pub password: String,
    /// Where the attempt came from, for throttling failed logins per address.
    pub client_ip: Option<std::net::IpAddr>,
}

#[derive(Message)]
#[rtype(result = "Result<Authenticated, AppError>")]
pub struct Refresh {
    pub refresh_token: String,
}

/// Ends the session the access token belongs to: its refresh token and access tokens stop
/// working at once.
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct Logout {
    pub session_id: Id,
}

#[derive(Message)]
#[rtype(result = "Result<User, AppError>")]
pub struct GetUser {
    pub user_id: Id,
}

/// CPU-heavy: handled on the hasher's own threads, never on the async executors.
#[derive(Message)]
#[rtype(result = "Result<String, AppError>")]
pub struct HashPassword {
    pub password: String,
}

#[derive(Message)]
#[rtype(result = "bool")]
pub struct VerifyPassword {
    pub password: String,
    pub hash: String,
}
