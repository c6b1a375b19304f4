//! A throwaway moto server (SQS and SES emulation) on a free loopback port, with helpers to
//! create a queue and its dead-letter queue, verify an SES sender, and read back the emails the
//! service sent, so tests can check an order's email went out through SES.
//!
//! Clients are configured explicitly (endpoint, region, placeholder credentials) rather than
//! through the process environment, which parallel tests must not mutate; `env()` gives the
//! variables for a child process (the service under test) instead.
//!
//! Moto quirks worth knowing (moto 5.x):
//! - a message received `maxReceiveCount` times moves to the dead-letter queue on the *next*
//!   receive, not when its visibility runs out;
//! - `SendEmail` keeps a single body (the HTML one when both are given), which is one reason the
//!   SES mailer uses `SendRawEmail`: moto keeps the whole MIME message, parsed here;
//! - sent emails are only visible through `GET /moto-api/data.json` (`ses.RawMessage` and
//!   `ses.Message`), which lists every account and region of the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{find_binary, free_port, temp_dir, wait_for_port, ServerProcess};

/// The region every helper and `env()` use; moto accepts any.
pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub process: ServerProcess,
    pub port: u16,
    binary: PathBuf,
    dir: PathBuf,
}

/// Starts moto_server, or returns `None` (after saying why) when it is not installed.
pub fn start() -> Option<Moto> {
    let binary = find_binary(
        "MOTO_SERVER_BIN",
        "moto_server",
        "python3 -m venv venv && venv/bin/pip install 'moto[server]'",
    )?;
    let port = free_port();
    let dir = temp_dir("moto");
    let mut child = spawn(&binary, &dir, port);
    wait_for_port(port, "moto_server", &mut child);
    Some(Moto {
        process: ServerProcess::new(child, Some(&dir)),
        port,
        binary,
        dir,
    })
}

fn spawn(binary: &Path, dir: &Path, port: u16) -> Child {
    // moto logs every request; keep it out of the test output but at hand in its data dir
    // (appended to, so the log of a run before a restart stays).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("moto.log"))
        .expect("open moto log");
    Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn moto_server")
}

/// An email as moto recorded it, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentEmail {
    pub message_id: String,
    /// Bare recipient addresses (`user@example.com`), without display names.
    pub to: Vec<String>,
    /// The `From` header as sent, display name included (`Order Service <shop@example.com>`).
    pub from: String,
    pub subject: String,
    /// The bodies, with line ends normalised to `\n`. For a `SendEmail` (not raw) moto keeps
    /// one body only, which then fills both.
    pub text: String,
    pub html: String,
    /// The message as sent (raw sends only), to check it like an `.eml` file.
    pub raw: String,
}

impl Moto {
    /// `http://127.0.0.1:<port>`, the endpoint URL for SDK clients.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points the service (a child process) at this moto.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint().as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", REGION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Stops the server (SIGKILL), as a crash or a network cut would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts a fresh moto on the same port, after a kill or not. moto keeps its state in
    /// memory, so queues and verified senders must be created again.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process.child = spawn(&self.binary, &self.dir, self.port);
        wait_for_port(self.port, "moto_server", &mut self.process.child);
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        order_service::queue::sqs::client_for_endpoint(&self.endpoint(), REGION)
    }

    pub fn ses(&self) -> aws_sdk_ses::Client {
        order_service::mail::ses::client_for_endpoint(&self.endpoint(), REGION)
    }

    /// Creates `<name>` with a dead-letter queue `<name>-dlq` after `max_receives` receives;
    /// returns `(queue_url, dead_letter_queue_url)`.
    pub async fn create_queue(&self, name: &str, max_receives: u32) -> (String, String) {
        order_service::queue::sqs::create_queue_with_dlq(&self.sqs(), name, max_receives)
            .await
            .expect("create queue and dead-letter queue in moto")
    }

    /// Verifies `email` as an SES identity, which SES requires of a sender.
    pub async fn verify_sender(&self, email: &str) {
        self.ses()
            .verify_email_identity()
            .email_address(email)
            .send()
            .await
            .expect("verify SES sender in moto");
    }

    /// Every email moto's SES accepted, in sending order.
    pub async fn sent_emails(&self) -> Vec<SentEmail> {
        let url = format!("{}/moto-api/data.json", self.endpoint());
        let text = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET moto's data.json")
            .text()
            .await
            .expect("read moto's data.json");
        let data: Value = serde_json::from_str(&text).expect("moto's data.json is JSON");
        let ses = &data["ses"];
        let raw = ses["RawMessage"].as_array().into_iter().flatten().map(|m| {
            let raw_data = m["raw_data"].as_str().unwrap_or_default();
            let mut email = parse_email(raw_data);
            email.message_id = m["id"].as_str().unwrap_or_default().to_string();
            email.raw = raw_data.to_string();
            email
        });
        let simple = ses["Message"].as_array().into_iter().flatten().map(|m| {
            let body = m["body"].as_str().unwrap_or_default().to_string();
            SentEmail {
                message_id: m["id"].as_str().unwrap_or_default().to_string(),
                to: m["destinations"]["ToAddresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .flat_map(addresses)
                    .collect(),
                from: m["source"].as_str().unwrap_or_default().to_string(),
                subject: m["subject"].as_str().unwrap_or_default().to_string(),
                text: body.clone(),
                html: body,
                raw: String::new(),
            }
        });
        raw.chain(simple).collect()
    }
}

/// Parses an RFC 5322 message of the shape the service sends (single part, or
/// `multipart/alternative` with text and HTML; 7bit, 8bit, quoted-printable or base64; RFC 2047
/// encoded headers). Enough for tests, not a general MIME parser.
pub fn parse_email(raw: &str) -> SentEmail {
    let (headers, body) = split_entity(raw);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_header(v))
            .unwrap_or_default()
    };
    let mut email = SentEmail {
        to: addresses(&header("To")),
        from: header("From"),
        subject: header("Subject"),
        ..SentEmail::default()
    };
    collect_bodies(&headers, body, &mut email);
    email
}

/// Headers (unfolded) and body of one MIME entity.
fn split_entity(raw: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .or_else(|| raw.split_once("\n\n"))
        .unwrap_or((raw, ""));
    let mut headers: Vec<(String, String)> = vec![];
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            // A folded continuation: unfolding removes only the line break.
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    (headers, body)
}

fn header_value<'h>(headers: &'h [(String, String)], name: &str) -> &'h str {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn collect_bodies(headers: &[(String, String)], body: &str, email: &mut SentEmail) {
    let content_type = header_value(headers, "Content-Type");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("text/plain")
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/") {
        let boundary = parameter(content_type, "boundary").expect("multipart without boundary");
        let delimiter = format!("--{boundary}");
        // The preamble before the first delimiter and the epilogue after the last are skipped.
        for part in body.split(delimiter.as_str()).skip(1) {
            if part.starts_with("--") {
                break;
            }
            let part = part
                .strip_prefix("\r\n")
                .or_else(|| part.strip_prefix('\n'))
                .unwrap_or(part);
            // The line break before a delimiter belongs to the delimiter.
            let part = part
                .strip_suffix("\r\n")
                .or_else(|| part.strip_suffix('\n'))
                .unwrap_or(part);
            let (part_headers, part_body) = split_entity(part);
            collect_bodies(&part_headers, part_body, email);
        }
        return;
    }
    let decoded = match header_value(headers, "Content-Transfer-Encoding")
        .to_ascii_lowercase()
        .as_str()
    {
        "base64" => decode_base64(body),
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    let text = String::from_utf8(decoded)
        .expect("email body is UTF-8")
        .replace("\r\n", "\n");
    if mime == "text/html" {
        email.html = text;
    } else {
        email.text = text;
    }
}

/// A `name=value` or `name="value"` parameter of a structured header.
fn parameter(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (n, v) = p.trim().split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`); whitespace between two
/// encoded words is dropped, as the RFC requires.
fn decode_header(value: &str) -> String {
    let mut out = Vec::new();
    let mut rest = value;
    let mut after_encoded_word = false;
    while !rest.is_empty() {
        match rest.find("=?") {
            Some(start) => {
                let (before, word) = rest.split_at(start);
                let decoded = encoded_word(word);
                match decoded {
                    Some((bytes, consumed)) => {
                        if !(after_encoded_word && before.trim().is_empty()) {
                            out.extend_from_slice(before.as_bytes());
                        }
                        out.extend(bytes);
                        rest = &word[consumed..];
                        after_encoded_word = true;
                    }
                    None => {
                        out.extend_from_slice(before.as_bytes());
                        out.extend_from_slice(b"=?");
                        rest = &word[2..];
                        after_encoded_word = false;
                    }
                }
            }
            None => {
                out.extend_from_slice(rest.as_bytes());
                rest = "";
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One encoded word at the start of `s`: its bytes, and how much of `s` it spans.
fn encoded_word(s: &str) -> Option<(Vec<u8>, usize)> {
    let inner = s.strip_prefix("=?")?;
    let mut fields = inner.splitn(3, '?');
    let charset = fields.next()?;
    let encoding = fields.next()?;
    let text_and_rest = fields.next()?;
    let end = text_and_rest.find("?=")?;
    let text = &text_and_rest[..end];
    let consumed = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    let bytes = match encoding.to_ascii_lowercase().as_str() {
        "b" => decode_base64(text),
        "q" => decode_quoted_printable(&text.replace('_', " ")),
        _ => return None,
    };
    Some((bytes, consumed))
}

fn decode_base64(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let Some(value) = ALPHABET.iter().position(|&a| a == c) else {
            continue; // line breaks and padding
        };
        buffer = (buffer << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

fn decode_quoted_printable(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if bytes[i + 1..].starts_with(b"\n") => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Bare addresses of an address list (`"Name" <a@x>, b@y` → `a@x`, `b@y`).
fn addresses(list: &str) -> Vec<String> {
    let mut out = vec![];
    let mut current = String::new();
    let mut quoted = false;
    for c in list.chars().chain(std::iter::once(',')) {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => {
                let entry = current.trim();
                let address = match (entry.rfind('<'), entry.rfind('>')) {
                    (Some(open), Some(close)) if open < close => &entry[open + 1..close],
                    _ => entry,
                };
                if !address.is_empty() {
                    out.push(address.trim().to_string());
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    out
}
