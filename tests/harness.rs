//! Self-checks of the harness's own parsers (MIME, base64), so an email assertion can only fail
//! because of the service, never because the test misread a valid message.

mod common;

use common::*;
use proptest::prelude::*;

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

#[test]
fn parses_a_multipart_alternative_message() {
    let msg = Message::parse(SAMPLE);
    assert_eq!(
        msg.header("to").unwrap(),
        "\"Ada Lovelace\" <ada@example.com>"
    );
    assert_eq!(
        msg.header("subject").unwrap(),
        "Your order 650000000000000000000001 is completed"
    );
    assert!(msg.content_type().starts_with("multipart/alternative"));
    assert_eq!(
        param(&msg.content_type(), "boundary").as_deref(),
        Some("XyZ123")
    );
    let parts = msg.leaf_parts();
    assert_eq!(parts.len(), 2);
    assert!(parts[0].0.starts_with("text/plain"));
    assert_eq!(
        parts[0].1.trim_end(),
        "Thanks! You ordered 2 x Flow Widget-1 and a very long line that is soft-wrapped here ✓"
    );
    assert!(parts[1].0.starts_with("text/html"));
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

proptest! {
    #[test]
    fn base64url_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let encoded = base64url_encode(&bytes);
        prop_assert!(!encoded.contains('='));
        prop_assert_eq!(base64_decode(&encoded, true).unwrap(), bytes);
    }

    #[test]
    fn quoted_printable_decodes_escapes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let encoded: String = bytes.iter().map(|b| format!("={b:02X}")).collect();
        prop_assert_eq!(decode_qp(&encoded), bytes);
    }
}
