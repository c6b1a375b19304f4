//! Bounded, trimmed free text (names, descriptions, address lines). Control characters are
//! refused so nothing a client sends can forge log lines or email headers.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
