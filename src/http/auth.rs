//! `/api/auth/*`: parse, send one message to AuthActor, map the reply.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::extract::{Auth, Json};
use super::problem::ApiError;
use super::schema;
use super::ApiState;
use crate::actors::auth::ask_auth;
use crate::domain::{user, Email, FieldError, Id, Role, User};
use crate::error::AppError;
use crate::messages::auth::{Authenticated, GetUser, Login, Logout, Refresh, Register};

/// An account as clients see it: never the password hash.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Id,
    #[schema(example = "user@example.com")]
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            email: u.email.to_string(),
            name: u.name,
            role: u.role,
            created_at: u.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    pub user: UserView,
    pub access_token: String,
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Lifetime of the access token, in seconds.
    #[schema(example = 3600)]
    pub expires_in: u64,
}

impl From<Authenticated> for AuthResponse {
    fn from(a: Authenticated) -> Self {
        AuthResponse {
            user: a.user.into(),
            access_token: a.tokens.access_token,
            refresh_token: a.tokens.refresh_token,
            token_type: "Bearer",
            expires_in: a.tokens.expires_in,
        }
    }
}

#[derive(Deserialize)]
pub struct RegisterRequest {
    pub email: Option<String>,
    pub password: Option<String>,
    pub name: Option<String>,
}

impl PartialSchema for RegisterRequest {
    fn schema() -> RefOr<Schema> {
        schema::object([
            ("email", Email::schema().into(), true),
            ("password", user::new_password_schema().into(), true),
            ("name", user::name_schema().into(), true),
        ])
    }
}
impl ToSchema for RegisterRequest {}

/// Any strings: a wrong email or password is a 401 like any other, never a 400.
#[derive(Deserialize)]
pub struct LoginRequest {
    pub email: Option<String>,
    pub password: Option<String>,
}

impl PartialSchema for LoginRequest {
    fn schema() -> RefOr<Schema> {
        schema::object([
            ("email", schema::string("user@example.com"), true),
            ("password", schema::string("user123"), true),
        ])
    }
}
impl ToSchema for LoginRequest {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    pub refresh_token: Option<String>,
}

impl PartialSchema for RefreshRequest {
    fn schema() -> RefOr<Schema> {
        schema::object([(
            "refreshToken",
            schema::string("eyJhbGciOiJIUzI1NiJ9…"),
            true,
        )])
    }
}
impl ToSchema for RefreshRequest {}

fn required(field: &str, value: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    if value.is_none() {
        errors.push(FieldError::new(field, "is required"));
    }
    value
}

#[utoipa::path(post, path = "/api/auth/register", tag = "auth", operation_id = "register", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created, with a token pair", body = AuthResponse),
        (status = 400, description = "Invalid email, password or name, or a body that is not JSON"),
        (status = 409, description = "Email already registered (`email_taken`)"),
    ))]
pub async fn register(
    state: web::Data<ApiState>,
    body: Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let mut errors = vec![];
    let email = required("email", body.email, &mut errors).and_then(|e| {
        Email::parse(&e)
            .map_err(|m| errors.push(FieldError::new("email", m)))
            .ok()
    });
    let password = required("password", body.password, &mut errors).and_then(|p| {
        user::check_new_password(&p)
            .map(|_| p)
            .map_err(|m| errors.push(FieldError::new("password", m)))
            .ok()
    });
    let name = required("name", body.name, &mut errors).and_then(|n| {
        user::parse_name(&n)
            .map_err(|m| errors.push(FieldError::new("name", m)))
            .ok()
    });
    let (Some(email), Some(password), Some(name)) = (email, password, name) else {
        return Err(AppError::Validation(errors).into());
    };
    let done = ask_auth(
        &state.auth,
        Register {
            email,
            password,
            name,
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(AuthResponse::from(done)))
}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth", operation_id = "login", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = AuthResponse),
        (status = 400, description = "Missing fields, or a body that is not JSON"),
        (status = 401, description = "Wrong email or password, the same answer for both (`invalid_credentials`)"),
        (status = 429, description = "Too many failed logins for this email or from this address (`rate_limited`)"),
    ))]
pub async fn login(
    state: web::Data<ApiState>,
    req: actix_web::HttpRequest,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let mut errors = vec![];
    let email = required("email", body.email, &mut errors);
    let password = required("password", body.password, &mut errors);
    let (Some(email), Some(password)) = (email, password) else {
        return Err(AppError::Validation(errors).into());
    };
    if password.chars().count() > user::MAX_PASSWORD_LEN {
        // Never worth hashing: no account can have such a password.
        return Err(AppError::InvalidCredentials.into());
    }
    let client_ip = state.client_address.client_ip(&req);
    let done = ask_auth(
        &state.auth,
        Login {
            email,
            password,
            client_ip,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(AuthResponse::from(done)))
}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", operation_id = "refreshTokens", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair; the presented refresh token is spent. Presented again within `REFRESH_REUSE_INTERVAL`, it returns the same pair", body = AuthResponse),
        (status = 400, description = "Missing refreshToken, or a body that is not JSON"),
        (status = 401, description = "Invalid, expired, revoked or already used refresh token"),
        (status = 503, description = "A reused token's revocation could not be recorded everywhere (`service_unavailable`): retry"),
    ))]
pub async fn refresh(
    state: web::Data<ApiState>,
    body: Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let refresh_token = body
        .0
        .refresh_token
        .ok_or_else(|| AppError::field("refreshToken", "is required"))?;
    let done = ask_auth(&state.auth, Refresh { refresh_token }).await?;
    Ok(HttpResponse::Ok().json(AuthResponse::from(done)))
}

#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", operation_id = "logout", security(("bearer" = [])),
    responses(
        (status = 204, description = "Session ended: its access and refresh tokens stop working, in every process. Logging out of an ended session answers 204 too, so a retry is harmless"),
        (status = 401, description = "Missing, forged or expired access token"),
        (status = 503, description = "The revocation could not be recorded everywhere (`service_unavailable`, with `Retry-After`): retry"),
    ))]
pub async fn logout(
    state: web::Data<ApiState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Signature and expiry only, not the session: logging out of an ended session is a retry.
    let token = super::extract::bearer_token(&req).ok_or(AppError::Unauthenticated(
        "missing bearer token: send Authorization: Bearer <accessToken>",
    ))?;
    let principal = state.authenticator.verify_signature(&token)?;
    ask_auth(
        &state.auth,
        Logout {
            session_id: principal.session_id,
        },
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/auth/me", tag = "auth", operation_id = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 404, description = "The caller's account no longer exists"),
    ))]
pub async fn me(
    state: web::Data<ApiState>,
    Auth(principal): Auth,
) -> Result<HttpResponse, ApiError> {
    let user = ask_auth(
        &state.auth,
        GetUser {
            user_id: principal.user_id,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}
