//! JWT access and refresh tokens. Only HS256 with the configured secret is accepted (an
//! `alg: none` or any other algorithm is refused by the validation), and issuer, audience,
//! expiry and token type are all checked: a refresh token never works as an access token and
//! the other way round, since each kind has its own secret and `typ`.

use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;
use crate::domain::{Id, Role};

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub sid: String,
    pub role: Role,
    pub typ: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub sub: String,
    pub sid: String,
    pub typ: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Who a valid access token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Id,
    pub session_id: Id,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Clone, Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

const ACCESS: &str = "access";
const REFRESH: &str = "refresh";

pub struct TokenService {
    access_encoding: EncodingKey,
    access_decoding: DecodingKey,
    refresh_encoding: EncodingKey,
    refresh_decoding: DecodingKey,
    validation: Validation,
    config: JwtConfig,
}

/// Why a token was refused; the reason is a metric label and a log field, never a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Expired,
    Invalid,
    WrongType,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Expired => "expired",
            Rejection::Invalid => "invalid",
            Rejection::WrongType => "wrong_type",
        }
    }
}

impl TokenService {
    pub fn new(config: &JwtConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        TokenService {
            access_encoding: EncodingKey::from_secret(config.access_secret.expose().as_bytes()),
            access_decoding: DecodingKey::from_secret(config.access_secret.expose().as_bytes()),
            refresh_encoding: EncodingKey::from_secret(config.refresh_secret.expose().as_bytes()),
            refresh_decoding: DecodingKey::from_secret(config.refresh_secret.expose().as_bytes()),
            validation,
            config: config.clone(),
        }
    }

    pub fn refresh_ttl(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.refresh_ttl).unwrap_or(chrono::Duration::days(7))
    }

    pub fn refresh_reuse_interval(&self) -> std::time::Duration {
        self.config.refresh_reuse_interval
    }

    pub fn access_ttl(&self) -> std::time::Duration {
        self.config.access_ttl
    }

    /// Issues an access token and a refresh token whose id is `refresh_jti` (stored in the
    /// session so that only the latest refresh token of a login works).
    pub fn issue(
        &self,
        user_id: Id,
        role: Role,
        session_id: Id,
        refresh_jti: &str,
        now: DateTime<Utc>,
    ) -> TokenPair {
        let iat = now.timestamp();
        let access = AccessClaims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            role,
            typ: ACCESS.into(),
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            iat,
            exp: iat + self.config.access_ttl.as_secs() as i64,
            jti: access_jti(refresh_jti),
        };
        let refresh = RefreshClaims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            typ: REFRESH.into(),
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            iat,
            exp: iat + self.config.refresh_ttl.as_secs() as i64,
            jti: refresh_jti.to_string(),
        };
        let header = Header::new(Algorithm::HS256);
        TokenPair {
            // Encoding HMAC claims we built ourselves can not fail.
            access_token: encode(&header, &access, &self.access_encoding)
                .expect("encode access token"),
            refresh_token: encode(&header, &refresh, &self.refresh_encoding)
                .expect("encode refresh token"),
            expires_in: self.config.access_ttl.as_secs(),
        }
    }

    pub fn verify_access(&self, token: &str) -> Result<Principal, Rejection> {
        let claims = decode::<AccessClaims>(token, &self.access_decoding, &self.validation)
            .map_err(classify)?
            .claims;
        if claims.typ != ACCESS {
            return Err(Rejection::WrongType);
        }
        Ok(Principal {
            user_id: claims.sub.parse().map_err(|_| Rejection::Invalid)?,
            session_id: claims.sid.parse().map_err(|_| Rejection::Invalid)?,
            role: claims.role,
        })
    }

    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, Rejection> {
        let claims = decode::<RefreshClaims>(token, &self.refresh_decoding, &self.validation)
            .map_err(classify)?
            .claims;
        if claims.typ != REFRESH {
            return Err(Rejection::WrongType);
        }
        Ok(claims)
    }
}

fn classify(e: jsonwebtoken::errors::Error) -> Rejection {
    match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => Rejection::Expired,
        _ => Rejection::Invalid,
    }
}

/// The access token's id, derived from its pair's refresh-token id: issuing a pair again for the
/// same refresh-token id and time gives the very same tokens, as the refresh reuse interval
/// needs (see `refresh_reuse`).
fn access_jti(refresh_jti: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(format!("access:{refresh_jti}").as_bytes())[..16])
}

/// 128 random bits, hex: unguessable ids for refresh tokens and sessions.
pub fn new_token_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::time::Duration;

    fn service(access: &str) -> TokenService {
        TokenService::new(&JwtConfig {
            access_secret: Secret::new(access),
            refresh_secret: Secret::new("refresh-secret"),
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
            refresh_reuse_interval: Duration::from_secs(10),
            issuer: "order-service".into(),
            audience: "order-service-api".into(),
        })
    }

    #[test]
    fn access_tokens_round_trip() {
        let s = service("access-secret");
        let (user, sid) = (Id::new(), Id::new());
        let pair = s.issue(user, Role::Admin, sid, "jti", Utc::now());
        let p = s.verify_access(&pair.access_token).unwrap();
        assert_eq!((p.user_id, p.session_id, p.role), (user, sid, Role::Admin));
        assert_eq!(s.verify_refresh(&pair.refresh_token).unwrap().jti, "jti");
    }

    #[test]
    fn a_pair_issued_again_for_the_same_refresh_id_and_time_is_the_same() {
        let s = service("access-secret");
        let (user, sid, now) = (Id::new(), Id::new(), Utc::now());
        let a = s.issue(user, Role::User, sid, "jti", now);
        let b = s.issue(user, Role::User, sid, "jti", now);
        assert_eq!(a.access_token, b.access_token);
        assert_eq!(a.refresh_token, b.refresh_token);
        let c = s.issue(user, Role::User, sid, "other", now);
        assert_ne!(c.refresh_token, b.refresh_token);
    }

    #[test]
    fn tokens_do_not_cross_kinds_or_secrets() {
        let s = service("access-secret");
        let pair = s.issue(Id::new(), Role::User, Id::new(), "jti", Utc::now());
        assert!(s.verify_access(&pair.refresh_token).is_err());
        assert!(s.verify_refresh(&pair.access_token).is_err());
        assert_eq!(
            service("other-secret").verify_access(&pair.access_token),
            Err(Rejection::Invalid)
        );
    }

    #[test]
    fn expired_and_unsigned_tokens_are_refused() {
        let s = service("access-secret");
        let old = Utc::now() - chrono::Duration::hours(2);
        let pair = s.issue(Id::new(), Role::User, Id::new(), "jti", old);
        assert_eq!(s.verify_access(&pair.access_token), Err(Rejection::Expired));
        // alg "none": header {"alg":"none","typ":"JWT"} with the claims of a valid token and no signature.
        let fresh = s.issue(Id::new(), Role::Admin, Id::new(), "jti", Utc::now());
        let payload = fresh.access_token.split('.').nth(1).unwrap();
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(s.verify_access(&unsigned), Err(Rejection::Invalid));
    }
}
