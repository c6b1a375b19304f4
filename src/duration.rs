//! Durations as people write them in `.env` files and on command lines: `500ms`, `30s`, `15m`,
//! `1h`, `7d`, `2w`, `1.5s`, `1h 30m`, or a bare number of seconds (as `jsonwebtoken` in the Node
//! service read `JWT_EXPIRATION=3600`). `config` reads every duration variable through this, and
//! so does `loadgen` for its flags; the units and fractions are `humantime`'s.

use std::time::Duration;

/// Parses a duration; the error says what is wrong with it (not which variable: the caller
/// knows that). Zero is accepted here; `config` refuses it where an instant timeout makes no
/// sense.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bare_seconds = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let parsed = if bare_seconds {
        humantime::parse_duration(&format!("{s}s"))
    } else {
        humantime::parse_duration(s)
    };
    parsed.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    fn secs(n: u64) -> Result<Duration, String> {
        Ok(Duration::from_secs(n))
    }

    #[test]
    fn units_of_the_env_file_and_the_readme() {
        assert_eq!(parse_duration("30s"), secs(30));
        assert_eq!(parse_duration("15m"), secs(900));
        assert_eq!(parse_duration("1h"), secs(3600));
        assert_eq!(parse_duration("7d"), secs(7 * 86_400));
        assert_eq!(parse_duration("2w"), secs(14 * 86_400));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn spellings_the_old_parsers_took() {
        for (text, expected) in [
            ("10sec", 10),
            ("10secs", 10),
            ("5min", 300),
            ("5mins", 300),
            ("2hr", 7200),
            ("2hrs", 7200),
            ("1day", 86_400),
            ("3days", 3 * 86_400),
            ("5 m", 300),
            (" 1h ", 3600),
        ] {
            assert_eq!(parse_duration(text), secs(expected), "{text:?}");
        }
    }

    #[test]
    fn a_bare_number_is_seconds_and_may_have_a_fraction() {
        assert_eq!(parse_duration("900"), secs(900));
        assert_eq!(parse_duration("0"), secs(0));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.25m"), secs(15));
    }

    #[test]
    fn combinations_add_up() {
        assert_eq!(parse_duration("1h 30m"), secs(5400));
        assert_eq!(parse_duration("1m30s"), secs(90));
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        for text in ["", "soon", "3 parsecs", "-5s", "1.2.3", "s", "5x"] {
            let err = parse_duration(text).expect_err(text);
            assert!(!err.is_empty(), "{text:?}");
        }
        assert!(parse_duration("5x")
            .unwrap_err()
            .contains("unknown time unit"));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(parse_duration("99999999999999999999999s").is_err());
        assert!(parse_duration("18446744073709551615w").is_err());
    }
}
