//! Bounded, trimmed free text (names, descriptions, address lines). Control characters are
//! refused so nothing a client sends can forge log lines or email headers.
//!
//! Each rule comes with the JSON Schema that states it exactly, for the OpenAPI document: a
//! client (or a fuzzer) that follows the document is never refused, and one that does not is.

use utoipa::openapi::schema::{ObjectBuilder, Type};

/// What `str::trim` takes away: Unicode `White_Space`, as the body of a regex class.
pub(crate) const WHITE_SPACE: &str =
    r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// What `char::is_control` refuses: Unicode `Cc`.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
/// [`CONTROL`] without tab, line feed and carriage return, which descriptions may hold.
const CONTROL_BUT_LINE_BREAKS: &str = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f";

pub fn bounded(raw: &str, min: usize, max: usize) -> Result<String, String> {
    let s = raw.trim();
    let len = s.chars().count();
    if s.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".into());
    }
    if len < min {
        return Err(if min == 1 {
            "must not be empty".into()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if len > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(s.to_string())
}

/// Like [`bounded`] but allows line breaks and tabs, for multi-line descriptions.
pub fn bounded_multiline(raw: &str, max: usize) -> Result<String, String> {
    let s = raw.trim();
    if s.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err("must not contain control characters".into());
    }
    if s.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(s.to_string())
}

/// Surrounding white space, then 1 to `max` characters (or, with `optional`, none) that begin and
/// end with a character that is neither white space nor `barred`, and hold none of `barred`.
/// The length is counted inside the white space, as [`bounded`] counts it after trimming;
/// `maxLength` could only count the whole string.
fn trimmed_pattern(max: usize, barred: &str, optional: bool) -> String {
    assert!(
        max >= 2,
        "a bound this small needs no pattern of this shape"
    );
    let ws = WHITE_SPACE;
    let inner = max - 2;
    let core = format!("[^{barred}{ws}](?:[^{barred}]{{0,{inner}}}[^{barred}{ws}])?");
    let core = if optional {
        format!("(?:{core})?")
    } else {
        core
    };
    format!("^[{ws}]*{core}[{ws}]*$")
}

/// The regex [`bounded`]`(_, 1, max)` accepts.
pub fn bounded_pattern(max: usize) -> String {
    trimmed_pattern(max, CONTROL, false)
}

/// The regex [`bounded_multiline`]`(_, max)` accepts.
pub fn multiline_pattern(max: usize) -> String {
    trimmed_pattern(max, CONTROL_BUT_LINE_BREAKS, true)
}

/// The schema of a string [`bounded`]`(_, 1, max)` accepts.
pub fn schema(max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(bounded_pattern(max)))
        .description(Some(format!(
            "1 to {max} characters once surrounding white space is trimmed (it is); no control \
             characters"
        )))
}

/// The schema of a string [`bounded_multiline`]`(_, max)` accepts.
pub fn multiline_schema(max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(multiline_pattern(max)))
        .description(Some(format!(
            "Up to {max} characters once surrounding white space is trimmed (it is); line breaks \
             and tabs allowed, no other control characters"
        )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn trims_and_bounds() {
        assert_eq!(bounded("  Ann ", 1, 10).unwrap(), "Ann");
        assert!(bounded("   ", 1, 10).is_err());
        assert!(bounded("abcdefghijk", 1, 10).is_err());
        assert_eq!(bounded("Zoë 😀", 1, 5).unwrap(), "Zoë 😀");
    }

    #[test]
    fn refuses_control_characters() {
        assert!(bounded("a\nb", 1, 10).is_err());
        assert!(bounded("a\u{0}b", 1, 10).is_err());
        assert!(bounded_multiline("line one\nline two", 100).is_ok());
        assert!(bounded_multiline("bell\u{7}", 100).is_err());
    }

    /// Strings near the edges of the rules: white space of every kind, control characters,
    /// line breaks, and lengths around the bound.
    fn edgy_text() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            Just(' '),
            Just('\t'),
            Just('\n'),
            Just('\r'),
            Just('\u{0}'),
            Just('\u{7}'),
            Just('\u{85}'),
            Just('\u{a0}'),
            Just('\u{2028}'),
            Just('\u{3000}'),
            Just('\u{1c}'),
            Just('\u{feff}'),
            Just('é'),
            Just('😀'),
            proptest::char::range('a', 'z'),
        ];
        proptest::collection::vec(ch, 0..12).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_pattern_accepts_exactly_what_bounded_accepts(s in edgy_text(), max in 2usize..8) {
            let re = regex::Regex::new(&bounded_pattern(max)).unwrap();
            prop_assert_eq!(re.is_match(&s), bounded(&s, 1, max).is_ok(), "{:?} max {}", s, max);
        }

        #[test]
        fn the_pattern_accepts_exactly_what_bounded_multiline_accepts(s in edgy_text(), max in 2usize..8) {
            let re = regex::Regex::new(&multiline_pattern(max)).unwrap();
            prop_assert_eq!(re.is_match(&s), bounded_multiline(&s, max).is_ok(), "{:?} max {}", s, max);
        }
    }
}
