//! Request extractors: the JSON body (with errors that name the offending field), the bearer
//! token, the admin role and the request id. Input becomes typed values here, at the edge.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::problem::ApiError;
use super::ApiState;
use crate::domain::FieldError;
use crate::error::AppError;
use crate::tokens::Principal;

/// The most a JSON body may weigh, set from `BODY_LIMIT_BYTES`.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body. Refuses a non-JSON content type (415), an oversized body (413), broken JSON
/// (400 `malformed_json`) and values of the wrong type (400 `validation_failed` naming the
/// field's JSON path, e.g. `items[0].quantity`). Unknown fields are ignored, as the replaced
/// service did.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<BodyLimit>()
            .copied()
            .unwrap_or(BodyLimit(1_048_576))
            .0;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            let is_json = content_type.as_deref().is_some_and(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
            if !is_json {
                return Err(ApiError::UnsupportedMediaType(
                    content_type.unwrap_or_else(|| "none".into()),
                ));
            }
            if declared_len.is_some_and(|n| n > limit) {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::MalformedJson(format!("could not read the body: {e}"))
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::PayloadTooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(Json)
        })
    }
}

pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let Object(value) = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_position(&inner.to_string());
        if inner.is_data() {
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            let hint = if message.contains("floating point") {
                " (amounts are integer cents)"
            } else {
                ""
            };
            ApiError::App(AppError::Validation(vec![FieldError::new(
                field,
                format!("{message}{hint}"),
            )]))
        } else {
            ApiError::MalformedJson(inner.to_string())
        }
    })?;
    de.end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// A value that must be a JSON object. A derived `Deserialize` also takes an array of the
/// fields' values in order (`["ann@example.com", "secret", "Ann"]` as a registration), which no
/// client means and the document does not allow; bodies are read through this, and so must be
/// the objects nested in them.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for OnlyMaps<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                // The same map access, so the field path of a nested error is still tracked.
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(OnlyMaps(std::marker::PhantomData))
            .map(Object)
    }
}

/// For `#[serde(default, deserialize_with = "whole_number")]` on an `Option<i64>` field: a whole
/// number, which JSON may write `5` or `5.0`. JSON Schema's `integer` is both, so the document
/// can not promise one without the other; `5.5` and numbers beyond `i64` are still refused.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // 2^63: the first float past i64::MAX; every float below it and integral fits.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v) {
                Ok(v as i64)
            } else {
                Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    struct MaybeWhole;
    impl<'de> serde::de::Visitor<'de> for MaybeWhole {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
            d.deserialize_any(Whole).map(Some)
        }
    }
    d.deserialize_option(MaybeWhole)
}

/// serde_json appends "at line 1 column 30" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The authenticated caller. Missing, malformed, expired or revoked tokens are 401.
pub struct Auth(pub Principal);

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let token = bearer_token(req);
        Box::pin(async move {
            let state = state
                .ok_or_else(|| ApiError::App(AppError::Internal("API state missing".into())))?;
            let token = token.ok_or(ApiError::App(AppError::Unauthenticated(
                "missing bearer token: send Authorization: Bearer <accessToken>",
            )))?;
            Ok(Auth(state.authenticator.authenticate(&token).await?))
        })
    }
}

pub(super) fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// An authenticated caller with the admin role; others get 403.
pub struct Admin(pub Principal);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let auth = Auth::from_request(req, payload);
        Box::pin(async move {
            let Auth(principal) = auth.await?;
            if principal.is_admin() {
                Ok(Admin(principal))
            } else {
                Err(ApiError::App(AppError::Forbidden))
            }
        })
    }
}

/// The id of this request (from `X-Request-Id`, or made by the middleware).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl FromRequest for RequestId {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(super::middleware::new_request_id()));
        std::future::ready(Ok(id))
    }
}

/// A path id, refused with 400 naming the parameter when it is not a 24-hex id.
pub fn parse_path_id(raw: &str) -> Result<crate::domain::Id, ApiError> {
    raw.parse()
        .map_err(|m: String| ApiError::App(AppError::field("id", m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Item>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Item {
        quantity: Option<i64>,
    }

    #[test]
    fn type_errors_name_the_field() {
        let err =
            parse_json::<Body>(br#"{"items":[{"quantity":1},{"quantity":"two"}]}"#).unwrap_err();
        match err {
            ApiError::App(AppError::Validation(e)) => {
                assert_eq!(e[0].field, "items[1].quantity");
                assert!(e[0].message.contains("invalid type"), "{}", e[0].message);
                assert!(!e[0].message.contains("line"), "{}", e[0].message);
            }
            other => panic!("{other:?}"),
        }
    }

    #[derive(serde::Deserialize, Debug)]
    struct Counted {
        #[serde(default, deserialize_with = "whole_number")]
        n: Option<i64>,
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        for (json, n) in [
            (r#"{"n": 5}"#, Some(5)),
            (r#"{"n": 5.0}"#, Some(5)),
            (r#"{"n": -2e3}"#, Some(-2000)),
            (r#"{"n": null}"#, None),
            (r#"{}"#, None),
        ] {
            assert_eq!(
                parse_json::<Counted>(json.as_bytes()).unwrap().n,
                n,
                "{json}"
            );
        }
        for json in [
            r#"{"n": 5.5}"#,
            r#"{"n": 1e19}"#,
            r#"{"n": 9223372036854775808}"#,
            r#"{"n": "5"}"#,
        ] {
            match parse_json::<Counted>(json.as_bytes()) {
                Err(ApiError::App(AppError::Validation(e))) => {
                    assert_eq!(e[0].field, "n", "{json}")
                }
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Nested {
        inner: Option<Object<Counted>>,
        list: Option<Vec<Object<Counted>>>,
    }

    #[test]
    fn objects_are_not_taken_from_arrays() {
        for (json, field) in [
            (r#"[5]"#, "body"),
            (r#"{"inner": [5]}"#, "inner"),
            (r#"{"list": [{"n": 1}, [5]]}"#, "list[1]"),
            (r#"{"inner": {"n": "x"}}"#, "inner.n"),
        ] {
            match parse_json::<Nested>(json.as_bytes()) {
                Err(ApiError::App(AppError::Validation(e))) => {
                    assert_eq!(e[0].field, field, "{json}")
                }
                other => panic!("{json}: {other:?}"),
            }
        }
        let ok =
            parse_json::<Nested>(br#"{"inner": {"n": 2}, "list": [{}], "other": [1]}"#).unwrap();
        assert_eq!(ok.inner.unwrap().0.n, Some(2));
    }

    #[test]
    fn broken_json_is_malformed() {
        assert!(matches!(
            parse_json::<Body>(br#"{"items": ["#),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<Body>(br#"{"items": []} trailing"#),
            Err(ApiError::MalformedJson(_))
        ));
    }
}
