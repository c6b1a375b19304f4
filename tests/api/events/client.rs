//! A server-sent events reader for the tests: opens a stream as a client would (bearer token,
//! `Last-Event-ID`) and reads it frame by frame, each read bounded by a deadline.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::harness::*;

/// How long a test waits for the next frame before it fails.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(15);

/// One block of the stream (the lines up to a blank line).
#[derive(Debug, Default, Clone)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comments: Vec<String>,
}

impl Frame {
    /// The `data:` as JSON (every status event has one).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("an event with data"))
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {self:?}"))
    }

    pub fn is_status(&self) -> bool {
        self.event.as_deref() == Some("status")
    }
}

/// What the next read brought.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// The server ended the stream.
    End,
}

pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
    pub content_type: String,
}

/// Opens `path`; a stream when the server answers 200, otherwise its answer, read in full.
pub async fn open(
    srv: &TestServer,
    path: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<EventStream, Resp> {
    let mut rb = srv
        .request(Method::GET, path)
        .header("accept", "text/event-stream");
    if let Some(token) = token {
        rb = rb.bearer_auth(token);
    }
    if let Some(id) = last_event_id {
        rb = rb.header("last-event-id", id);
    }
    // Not `srv.client`: its 20 s request timeout would cut a stream that is meant to stay open.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .execute(rb.build().unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}; server output:\n{}", srv.output()));
    if response.status() != 200 {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        return Err(Resp {
            method: Method::GET,
            path: path.to_string(),
            query: None,
            status,
            headers,
            text,
        });
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok(EventStream {
        response,
        buffer: String::new(),
        content_type,
    })
}

/// Opens `path` and asserts it is an event stream.
pub async fn open_ok(
    srv: &TestServer,
    path: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> EventStream {
    let stream = open(srv, path, Some(token), last_event_id)
        .await
        .unwrap_or_else(|r| panic!("{path} refused: {}", r.ctx()));
    assert_eq!(stream.content_type, "text/event-stream", "{path}");
    stream
}

impl EventStream {
    /// The next frame or the end, failing the test if neither comes within `deadline`.
    pub async fn next_within(&mut self, deadline: Duration) -> Next {
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                return Next::Frame(parse(&block));
            }
            let chunk = tokio::time::timeout(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| {
                    panic!("no frame within {deadline:?}; unread: {:?}", self.buffer)
                })
                .expect("read the stream");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => {
                    assert!(
                        self.buffer.is_empty(),
                        "stream ended mid-frame: {:?}",
                        self.buffer
                    );
                    return Next::End;
                }
            }
        }
    }

    /// The next status event, skipping comments and `retry:`; `None` at the end of the stream.
    /// Fails if none comes within [`FRAME_DEADLINE`], heartbeats or not.
    pub async fn next_status(&mut self) -> Option<Frame> {
        let deadline = std::time::Instant::now() + FRAME_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "no status event within {FRAME_DEADLINE:?}");
            match self.next_within(left).await {
                Next::End => return None,
                Next::Frame(f) if f.is_status() => return Some(f),
                Next::Frame(_) => {}
            }
        }
    }

    /// Status events until the stream ends.
    pub async fn rest(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.next_status().await {
            frames.push(f);
        }
        frames
    }

    /// Status events until one for `order_id` with `status` (inclusive); fails if the stream
    /// ends first.
    pub async fn until(&mut self, order_id: &str, status: &str) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let f = self.next_status().await.unwrap_or_else(|| {
                panic!("stream ended before {order_id} was {status}: {frames:?}")
            });
            let done = f.json()["order"]["id"] == order_id && f.json()["status"] == status;
            frames.push(f);
            if done {
                return frames;
            }
        }
    }
}

fn parse(block: &str) -> Frame {
    let mut frame = Frame::default();
    for line in block.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comments.push(comment.trim().to_string());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
        match field {
            "id" => frame.id = Some(value),
            "event" => frame.event = Some(value),
            "data" => frame.data = Some(value),
            "retry" => frame.retry = Some(value),
            other => panic!("unknown SSE field {other:?} in {block:?}"),
        }
    }
    frame
}

/// The status and order id of each frame, for messages and comparisons.
pub fn summary(frames: &[Frame]) -> Vec<(String, String)> {
    frames
        .iter()
        .map(|f| {
            let j = f.json();
            (str_of(&j["order"]["id"]), str_of(&j["status"]))
        })
        .collect()
}
