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
//! - `SendEmail` keeps a single body (the HTML one when both are given);
//! - `SendBulkTemplatedEmail` (how the service sends) keeps the template's name and each
//!   destination's data, not the email: [`Moto::sent_emails`] asks moto's own
//!   `TestRenderTemplate` (an SES API) to render each destination, and puts the `From` and
//!   `To` that SES would write from `Source` and the destination's address on top, with
//!   moto's `Date` (ISO 8601, in the server's time zone, UTC here) written as RFC 5322 wants it;
//! - sent emails are only visible through `GET /moto-api/data.json` (`ses.RawMessage`,
//!   `ses.TemplateMessage` and `ses.Message`), which lists every account and region of the
//!   server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use mail_parser::{MessageParser, PartType};
use serde_json::Value;

use super::{find_binary, free_port, temp_dir, wait_for_port, ServerProcess};

/// The region every helper and `env()` use; moto accepts any.
pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub process: ServerProcess,
    pub port: u16,
    binary: PathBuf,
    dir: PathBuf,
    /// Templated emails already rendered, by moto's message id and destination: what was sent
    /// does not change, and rendering asks moto once per destination.
    rendered: Mutex<HashMap<(String, usize), String>>,
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
        rendered: Mutex::default(),
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
    /// The message as sent (raw sends), or as SES renders a templated one (see the module
    /// comment), to check it like an `.eml` file; empty for a `SendEmail`.
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

    /// How many sending requests moto's SES accepted (`SendRawEmail`, `SendEmail`, a
    /// templated or bulk templated send each count one, whatever their recipients).
    pub async fn ses_send_requests(&self) -> usize {
        let data = self.data().await;
        ["RawMessage", "TemplateMessage", "Message"]
            .iter()
            .map(|kind| data["ses"][kind].as_array().map_or(0, Vec::len))
            .sum()
    }

    /// `GET /moto-api/data.json`: every record of every service.
    async fn data(&self) -> Value {
        let url = format!("{}/moto-api/data.json", self.endpoint());
        let text = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET moto's data.json")
            .text()
            .await
            .expect("read moto's data.json");
        serde_json::from_str(&text).expect("moto's data.json is JSON")
    }

    /// Every email moto's SES accepted, each kind of send (raw, templated, simple) in sending order.
    pub async fn sent_emails(&self) -> Vec<SentEmail> {
        let data = self.data().await;
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
                    .flat_map(|a| parse_email(&format!("To: {a}\r\n\r\n")).to)
                    .collect(),
                from: m["source"].as_str().unwrap_or_default().to_string(),
                subject: m["subject"].as_str().unwrap_or_default().to_string(),
                text: body.clone(),
                html: body,
                raw: String::new(),
            }
        });
        let mut templated = Vec::new();
        for m in ses["TemplateMessage"].as_array().into_iter().flatten() {
            templated.extend(self.rendered_template_message(m).await);
        }
        raw.chain(templated).chain(simple).collect()
    }

    /// One `ses.TemplateMessage` record: a destination each for a bulk send (a list of
    /// `{Destination, ReplacementTemplateData}`), one for a `SendTemplatedEmail`.
    async fn rendered_template_message(&self, m: &Value) -> Vec<SentEmail> {
        let id = m["id"].as_str().unwrap_or_default();
        let source = m["source"].as_str().unwrap_or_default();
        let template = m["template"].as_str().unwrap_or_default();
        let default_data = m["template_data"].as_str().unwrap_or("{}");
        let destinations: Vec<(&Value, &str)> = match &m["destinations"] {
            Value::Array(list) => list
                .iter()
                .map(|d| {
                    let data = d["ReplacementTemplateData"].as_str().unwrap_or("{}");
                    (&d["Destination"], data)
                })
                .collect(),
            single => vec![(single, "{}")],
        };
        let mut emails = Vec::with_capacity(destinations.len());
        for (index, (destination, data)) in destinations.into_iter().enumerate() {
            let key = (id.to_string(), index);
            let cached = self.rendered.lock().unwrap().get(&key).cloned();
            let raw = match cached {
                Some(raw) => raw,
                None => {
                    let data = merged_template_data(default_data, data);
                    let rendered = self.render(template, &data).await;
                    let to: Vec<&str> = destination["ToAddresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let raw = format!(
                        "From: {source}\r\nTo: {}\r\n{}",
                        to.join(", "),
                        with_rfc5322_date(&rendered)
                    );
                    self.rendered.lock().unwrap().insert(key, raw.clone());
                    raw
                }
            };
            let mut email = parse_email(&raw);
            email.message_id = format!("{id}#{index}");
            email.raw = raw;
            emails.push(email);
        }
        emails
    }

    /// The message SES makes of `template` with `data` (`TestRenderTemplate`).
    async fn render(&self, template: &str, data: &str) -> String {
        self.ses()
            .test_render_template()
            .template_name(template)
            .template_data(data)
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto renders template {template} with {data}: {e:?}"))
            .rendered_template()
            .unwrap_or_default()
            .to_string()
    }
}

/// moto's rendering starts `Date: 2026-12-04T21:22:54.820377` (Python's `isoformat`); SES
/// writes an RFC 5322 date.
fn with_rfc5322_date(rendered: &str) -> String {
    let Some(rest) = rendered.strip_prefix("Date: ") else {
        return rendered.to_string();
    };
    let (iso, after) = rest.split_once("\r\n").unwrap_or((rest, ""));
    match chrono::NaiveDateTime::parse_from_str(iso.trim(), "%Y-%m-%dT%H:%M:%S%.f") {
        Ok(date) => format!("Date: {}\r\n{after}", date.and_utc().to_rfc2822()),
        Err(_) => rendered.to_string(),
    }
}

/// A destination's data over the default data, key by key, as SES merges them.
fn merged_template_data(default_data: &str, replacement: &str) -> String {
    let mut merged: serde_json::Map<String, Value> =
        serde_json::from_str(default_data).unwrap_or_default();
    let replacement: serde_json::Map<String, Value> =
        serde_json::from_str(replacement).unwrap_or_default();
    merged.extend(replacement);
    Value::Object(merged).to_string()
}

/// Reads an RFC 5322 message with `mail-parser` (folded and encoded headers, multipart
/// alternatives, quoted-printable and base64 bodies): the first text and the first HTML part.
pub fn parse_email(raw: &str) -> SentEmail {
    let message = MessageParser::default()
        .parse(raw)
        .unwrap_or_else(|| panic!("not an RFC 5322 message:\n{raw}"));
    let to = message
        .to()
        .map(|list| {
            list.iter()
                .filter_map(|a| a.address())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let from = message
        .from()
        .and_then(|list| list.first())
        .map(|a| {
            let address = a.address().unwrap_or_default();
            match a.name() {
                Some(name) => format!("{name} <{address}>"),
                None => address.to_string(),
            }
        })
        .unwrap_or_default();
    let mut email = SentEmail {
        to,
        from,
        subject: message.subject().unwrap_or_default().to_string(),
        ..SentEmail::default()
    };
    for part in &message.parts {
        match &part.body {
            PartType::Text(text) if email.text.is_empty() => {
                email.text = text.replace("\r\n", "\n");
            }
            PartType::Html(html) if email.html.is_empty() => {
                email.html = html.replace("\r\n", "\n");
            }
            _ => {}
        }
    }
    email
}
