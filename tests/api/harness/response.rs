//! One HTTP answer as the tests see it, and the assertions on its shape that every suite shares:
//! problem+json errors, validation errors, ids, times, key sets.

use std::collections::BTreeSet;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct Resp {
    pub method: Method,
    /// Request path without the query string.
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e})", self.ctx()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is not ASCII").to_string())
    }

    pub fn content_type(&self) -> String {
        self.header("content-type").unwrap_or_default()
    }

    /// Method, path, status and body, for assertion messages.
    pub fn ctx(&self) -> String {
        let q = self
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let body: String = self.text.chars().take(2000).collect();
        format!(
            "{} {}{q} -> {} {}",
            self.method, self.path, self.status, body
        )
    }

    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status: {}", self.ctx());
        self
    }
}

/// Asserts a success answer is `application/json`.
pub fn assert_json_ct(r: &Resp) {
    assert!(
        r.content_type().starts_with("application/json"),
        "content-type {:?}: {}",
        r.content_type(),
        r.ctx()
    );
}

/// Asserts an RFC 9457 problem response with the given status and `code`; returns the body.
pub fn assert_problem(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "unexpected status: {}", r.ctx());
    assert!(
        r.content_type().starts_with("application/problem+json"),
        "error content-type is {:?}, want application/problem+json: {}",
        r.content_type(),
        r.ctx()
    );
    let body = r.json();
    assert_eq!(body["code"], json!(code), "problem code: {}", r.ctx());
    assert_eq!(
        body["status"],
        json!(status),
        "problem status field: {}",
        r.ctx()
    );
    for field in ["type", "title", "detail"] {
        assert!(
            body[field].as_str().is_some_and(|s| !s.is_empty()),
            "problem field `{field}` must be a non-empty string: {}",
            r.ctx()
        );
    }
    let instance = body["instance"]
        .as_str()
        .unwrap_or_else(|| panic!("problem has no `instance`: {}", r.ctx()));
    let with_query = r.query.as_deref().map(|q| format!("{}?{q}", r.path));
    assert!(
        instance == r.path || Some(instance) == with_query.as_deref(),
        "problem `instance` is {instance:?}, want the request path {:?}: {}",
        r.path,
        r.ctx()
    );
    body
}

/// The `field` names of a validation problem's `errors`, each checked to have a message.
pub fn error_fields(r: &Resp, body: &Value) -> BTreeSet<String> {
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("validation problem has no `errors` array: {}", r.ctx()));
    errors
        .iter()
        .map(|e| {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "field error without message: {e} in {}",
                r.ctx()
            );
            e["field"]
                .as_str()
                .unwrap_or_else(|| panic!("field error without `field`: {e} in {}", r.ctx()))
                .to_string()
        })
        .collect()
}

/// Asserts 400 `validation_failed` naming exactly `fields`.
pub fn assert_validation(r: &Resp, fields: &[&str]) -> Value {
    let body = assert_problem(r, 400, "validation_failed");
    let got = error_fields(r, &body);
    let want: BTreeSet<String> = fields.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        got,
        want,
        "fields named by the validation problem: {}",
        r.ctx()
    );
    body
}

/// Asserts `value` is a 24-hex id string.
pub fn assert_id(value: &Value, what: &str) -> String {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    assert!(
        s.len() == 24
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{what} is not a 24-hex id: {s:?}"
    );
    s.to_string()
}

/// Asserts `value` is an RFC 3339 time; returns it parsed.
pub fn assert_time(value: &Value, what: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what} {s:?} is not RFC 3339: {e}"))
}

/// Every object key anywhere in `v` (recursively), for "no such field anywhere" checks.
pub fn all_keys(v: &Value) -> Vec<String> {
    let mut out = vec![];
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    out.push(k.clone());
                    walk(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

pub fn object_keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

pub fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A problem body without `instance`, for "identical except instance" comparisons.
pub fn without_instance(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("instance");
    }
    v
}
