//! An email address that has been checked once at the edge and is normalised (trimmed,
//! lower-cased) so that `A@x.com` and `a@x.com` are the same account.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};

use super::text::WHITE_SPACE;

#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

const MAX_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;
const MAX_LABEL_LEN: usize = 63;
/// The characters of a local part besides letters and digits (RFC 5322 `atext`).
const LOCAL_SYMBOLS: &str = "!#$%&'*+/=?^_`{|}~-";

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        // ASCII only: a full Unicode lower-casing would turn the Kelvin sign into a valid `k`.
        let s = raw.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > MAX_LEN {
            return Err(format!("must be at most {MAX_LEN} characters"));
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("must be an email address like name@example.com".into());
        };
        let ok_local = !local.is_empty()
            && local.len() <= MAX_LOCAL_LEN
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || LOCAL_SYMBOLS.contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let labels: Vec<&str> = domain.split('.').collect();
        let ok_domain = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= MAX_LABEL_LEN
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if ok_local && ok_domain {
            Ok(Email(s))
        } else {
            Err("must be an email address like name@example.com".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The regexes an address must match, all of them, for [`Email::parse`] to take it: its
    /// shape, the length of its local part and its whole length (each inside the surrounding
    /// white space, which is trimmed). A regex without lookahead can not count across the shape,
    /// hence three (`allOf` in the schema).
    pub fn patterns() -> [String; 3] {
        let ws = WHITE_SPACE;
        let atom = format!("[A-Za-z0-9{}]+", regex_escape(LOCAL_SYMBOLS));
        let inner = MAX_LABEL_LEN - 2;
        let label = format!("[A-Za-z0-9](?:[A-Za-z0-9-]{{0,{inner}}}[A-Za-z0-9])?");
        [
            format!("^[{ws}]*{atom}(?:\\.{atom})*@{label}(?:\\.{label})+[{ws}]*$"),
            format!("^[{ws}]*[^@]{{1,{MAX_LOCAL_LEN}}}@"),
            format!("^[{ws}]*[^{ws}]{{1,{MAX_LEN}}}[{ws}]*$"),
        ]
    }

    /// The schema of a string [`Email::parse`] accepts.
    pub fn schema() -> Schema {
        let mut all = AllOfBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "An email address: `local@domain`, the local part up to {MAX_LOCAL_LEN} of \
                 letters, digits, `{LOCAL_SYMBOLS}` and single inner dots, the domain two or \
                 more labels of letters, digits and inner hyphens; up to {MAX_LEN} characters \
                 once surrounding white space is trimmed (it is, and the address is lower-cased)"
            )))
            .examples([serde_json::json!("ann@example.com")]);
        for pattern in Self::patterns() {
            all = all.item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(pattern)),
            );
        }
        Schema::AllOf(all.build())
    }
}

/// `text` with every character a regex class may treat specially escaped (in ECMA-262, Python
/// and Rust alike).
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = matches!(c, '\\' | ']' | '[' | '^' | '-');
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_case_and_spaces() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@x.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@-x.com",
            ".a@x.com",
            "a..b@x.com",
            "a@x..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn accepts_simple_generated_addresses(local in "[a-z0-9]{1,20}", domain in "[a-z]{1,10}", tld in "[a-z]{2,6}") {
            let raw = format!("{local}@{domain}.{tld}");
            let parsed = Email::parse(&raw).unwrap();
            prop_assert_eq!(parsed.as_str(), raw.as_str());
        }

        #[test]
        fn never_accepts_strings_without_at(s in "[^@]{0,40}") {
            prop_assert!(Email::parse(&s).is_err());
        }

        /// The document's patterns say exactly what `parse` takes (edgy strings: white space,
        /// dots, hyphens, symbols, long parts, the Kelvin sign).
        #[test]
        fn the_patterns_accept_exactly_what_parse_accepts(
            s in "[ \t\u{a0}]{0,2}([a-zA-Z0-9.!#$%&'*+/=?^_`{|}~\u{212a}-]{0,70})@([a-z0-9.-]{0,70}|([a-z0-9-]{1,64}\\.){1,4}[a-z]{1,3})[ \n\u{3000}]{0,2}"
        ) {
            let res: Vec<regex::Regex> = Email::patterns().iter().map(|p| regex::Regex::new(p).unwrap()).collect();
            prop_assert_eq!(res.iter().all(|re| re.is_match(&s)), Email::parse(&s).is_ok(), "{:?}", s);
        }

        #[test]
        fn the_patterns_bound_the_whole_length(local in "[a-z]{1,64}", labels in proptest::collection::vec("[a-z]{1,63}", 2..6)) {
            let s = format!("{local}@{}", labels.join("."));
            let res: Vec<regex::Regex> = Email::patterns().iter().map(|p| regex::Regex::new(p).unwrap()).collect();
            prop_assert_eq!(res.iter().all(|re| re.is_match(&s)), Email::parse(&s).is_ok(), "{:?}", s);
        }
    }
}
