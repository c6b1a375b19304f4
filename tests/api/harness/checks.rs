//! Self-checks of the harness, so an assertion can only fail because of the service, never
//! because the test misread a valid answer: that the email reader (mail-parser, as the harness
//! calls it) decodes what the service's mailers may send, and that the id and name helpers hold.

use mail_parser::MimeHeaders;

use super::*;

const SAMPLE: &str = "From: Order Service <orders@example.com>\r\n\
To: \"Ada Lovelace\" <ada@example.com>\r\n\
Subject: =?utf-8?b?WW91ciBvcmRlciA2NTAwMDAwMDAwMDAwMDAwMDAwMDAwMDEg?=\r\n =?utf-8?q?is_completed?=\r\n\
Date: Tue, 25 Nov 2025 03:41:00 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative;\r\n boundary=\"XyZ123\"\r\n\
\r\n\
--XyZ123\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Thanks! You ordered 2 x Flow Widget-1 and a very long line that is soft-wrapped=\r\n here =E2=9C=93\r\n\
--XyZ123\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
PHA+Rmxvdy\r\nBXaWRnZXQtMTwvcD4=\r\n\
--XyZ123--\r\n";

/// Folded and encoded (base64 and Q) headers, a quoted-printable part with a soft line break and
/// UTF-8, a base64 part split across lines.
#[test]
fn parses_a_multipart_alternative_message() {
    let msg = parse_email(SAMPLE);
    let to = msg.to().and_then(|to| to.first()).expect("a To address");
    assert_eq!(to.name(), Some("Ada Lovelace"));
    assert_eq!(to.address(), Some("ada@example.com"));
    assert_eq!(
        msg.subject(),
        Some("Your order 650000000000000000000001 is completed")
    );
    assert!(msg.date().is_some(), "the Date header parses");
    assert_eq!(mime_type(&msg), "multipart/alternative");
    assert_eq!(
        msg.content_type().and_then(|ct| ct.attribute("boundary")),
        Some("XyZ123")
    );
    let parts = leaf_parts(&msg);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].0, "text/plain");
    assert_eq!(
        parts[0].1.trim_end(),
        "Thanks! You ordered 2 x Flow Widget-1 and a very long line that is soft-wrapped here ✓"
    );
    assert_eq!(parts[1].0, "text/html");
    assert_eq!(parts[1].1, "<p>Flow Widget-1</p>");
}

#[test]
fn problem_and_id_helpers() {
    assert_eq!(
        assert_id(&serde_json::json!("650000000000000000000001"), "id"),
        "650000000000000000000001"
    );
    assert!(std::panic::catch_unwind(|| assert_id(
        &serde_json::json!("65000000000000000000000"),
        "id"
    ))
    .is_err());
    assert!(std::panic::catch_unwind(|| assert_id(
        &serde_json::json!("zz0000000000000000000001"),
        "id"
    ))
    .is_err());
    assert_eq!(random_string(48).len(), 48);
    assert_ne!(random_string(48), random_string(48));
    assert_ne!(unique("x"), unique("x"));
}
