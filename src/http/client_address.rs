//! Which address a request comes from, for the login throttle's per-address limits.
//!
//! Behind proxies the peer is the nearest proxy, and the client is named in `X-Forwarded-For`
//! (or RFC 7239 `Forwarded: for=`). Each proxy *appends* the address it saw, and passes on what
//! came before it unchanged: everything left of the entries our own proxies wrote is whatever the
//! client chose to send. So only the rightmost `hops` entries are trusted, and the client is the
//! address the outermost trusted proxy saw: the `hops`-th entry from the right. Reading the
//! leftmost entry instead would let a client name a new address on every request and never meet
//! the per-address limits.
//!
//! `X-Forwarded-For` is read when present; `Forwarded` only when it is absent (a proxy that
//! writes only `Forwarded` must drop a client's `X-Forwarded-For`, see the README).

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use actix_web::HttpRequest;

/// Where the client address is taken from (`TRUST_PROXY_HEADERS`, `TRUST_PROXY_HOPS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAddressSource {
    /// The TCP peer: the service faces clients directly.
    Peer,
    /// `hops` proxies of ours (at least 1) stand between clients and the service.
    TrustedProxies { hops: usize },
}

impl ClientAddressSource {
    /// `hops` must be at least 1 (checked by the configuration).
    pub fn new(trust_proxy_headers: bool, hops: usize) -> Self {
        if trust_proxy_headers {
            ClientAddressSource::TrustedProxies { hops: hops.max(1) }
        } else {
            ClientAddressSource::Peer
        }
    }

    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr().map(|a| a.ip());
        match *self {
            ClientAddressSource::Peer => peer,
            ClientAddressSource::TrustedProxies { hops } => {
                forwarded_client(req.headers(), hops).or(peer)
            }
        }
    }
}

/// The address the outermost of `hops` trusted proxies saw, if the headers name one.
fn forwarded_client(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    let chain = forwarded_chain(headers);
    if chain.is_empty() {
        return None;
    }
    // Fewer entries than proxies: every entry was written by one of ours, the leftmost by the
    // proxy that faced the client.
    let index = chain.len().saturating_sub(hops);
    parse_node(&chain[index])
}

/// The entries of `X-Forwarded-For` (all its header lines, in order), or else the `for=`
/// values of `Forwarded`.
fn forwarded_chain(headers: &HeaderMap) -> Vec<String> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .collect()
    };
    let xff = values("x-forwarded-for");
    if !xff.is_empty() {
        return xff;
    }
    values("forwarded")
        .iter()
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
                // An element without `for=` still counts as a hop: a proxy wrote it.
                .unwrap_or_default()
        })
        .collect()
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1` or `[2001:db8::1]:80`.
/// `unknown` and obfuscated names (`_hidden`) name no address.
fn parse_node(node: &str) -> Option<IpAddr> {
    node.parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            node.strip_prefix('[')
                .and_then(|rest| rest.split_once(']'))
                .and_then(|(ip, _)| ip.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn client(source: ClientAddressSource, headers: &[(&str, &str)]) -> Option<IpAddr> {
        let mut req = TestRequest::default().peer_addr("192.0.2.1:5000".parse().unwrap());
        for (k, v) in headers {
            req = req.append_header((*k, *v));
        }
        source.client_ip(&req.to_http_request())
    }

    const ONE: ClientAddressSource = ClientAddressSource::TrustedProxies { hops: 1 };
    const TWO: ClientAddressSource = ClientAddressSource::TrustedProxies { hops: 2 };

    #[test]
    fn without_trust_the_headers_are_ignored() {
        let forged = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(client(ClientAddressSource::Peer, &forged), ip("192.0.2.1"));
    }

    #[test]
    fn the_entry_our_outermost_proxy_wrote_wins_over_forged_ones() {
        let h = [("x-forwarded-for", "6.6.6.6, 7.7.7.7, 203.0.113.9")];
        assert_eq!(client(ONE, &h), ip("203.0.113.9"));
        assert_eq!(client(TWO, &h), ip("7.7.7.7"));
        // Two header lines are one list, in order.
        let h = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(client(ONE, &h), ip("203.0.113.9"));
    }

    #[test]
    fn a_chain_shorter_than_the_proxies_names_its_leftmost_entry() {
        let h = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(client(TWO, &h), ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let h = [(
            "forwarded",
            r#"for=6.6.6.6;proto=https, for="[2001:db8::7]:4711";by=10.0.0.1"#,
        )];
        assert_eq!(client(ONE, &h), ip("2001:db8::7"));
        assert_eq!(client(TWO, &h), ip("6.6.6.6"));
        let both = [
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(client(ONE, &both), ip("203.0.113.9"));
    }

    #[test]
    fn unusable_entries_fall_back_to_the_peer() {
        for value in ["unknown", "_hidden", "not an address", ""] {
            let h = [("x-forwarded-for", value)];
            assert_eq!(client(ONE, &h), ip("192.0.2.1"), "{value:?}");
        }
        assert_eq!(client(ONE, &[]), ip("192.0.2.1"));
        assert_eq!(
            client(ONE, &[("x-forwarded-for", "203.0.113.9:8080")]),
            ip("203.0.113.9")
        );
    }
}
