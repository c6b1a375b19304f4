//! Reading traces back through Jaeger's query HTTP API (`/api/traces/{id}`), as an SRE's Jaeger UI
//! does, and the parent/link relations between their spans.

use std::time::Duration;

use serde_json::Value;

use crate::harness::poll_until;

/// One span as Jaeger stored it.
#[derive(Clone, Debug)]
pub struct StoredSpan {
    pub span_id: String,
    pub name: String,
    /// `CHILD_OF` reference: the parent span's id.
    pub parent: Option<String>,
    /// `FOLLOWS_FROM` references (OpenTelemetry span links): (trace id, span id) of each.
    pub links: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
}

impl StoredSpan {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_error(&self) -> bool {
        self.tag("otel.status_code") == Some("ERROR") || self.tag("error") == Some("true")
    }
}

/// A trace: its spans, in no particular order.
#[derive(Clone, Debug)]
pub struct Trace {
    pub spans: Vec<StoredSpan>,
}

impl Trace {
    pub fn named(&self, name: &str) -> Option<&StoredSpan> {
        self.spans.iter().find(|s| s.name == name)
    }

    pub fn by_id(&self, id: &str) -> Option<&StoredSpan> {
        self.spans.iter().find(|s| s.span_id == id)
    }

    /// The span called `name`; panics listing the names there are.
    pub fn span(&self, name: &str) -> &StoredSpan {
        self.named(name)
            .unwrap_or_else(|| panic!("no span {name:?} in the trace; spans: {}", self.names()))
    }

    pub fn names(&self) -> String {
        let mut names: Vec<&str> = self.spans.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        names.join(", ")
    }

    /// True when `ancestor` is `span`'s parent, grandparent, ….
    pub fn descends_from(&self, span: &StoredSpan, ancestor: &StoredSpan) -> bool {
        let mut current = span.parent.clone();
        while let Some(id) = current {
            if id == ancestor.span_id {
                return true;
            }
            current = self.by_id(&id).and_then(|s| s.parent.clone());
        }
        false
    }

    /// Asserts `child`'s direct parent is `parent` (both by name).
    pub fn assert_child(&self, child: &str, parent: &str) {
        let (c, p) = (self.span(child), self.span(parent));
        assert_eq!(
            c.parent.as_deref(),
            Some(p.span_id.as_str()),
            "{child:?} should be a child of {parent:?}; trace: {self:#?}"
        );
    }

    /// Asserts `span` is somewhere below `ancestor` (both by name).
    pub fn assert_below(&self, span: &str, ancestor: &str) {
        assert!(
            self.descends_from(self.span(span), self.span(ancestor)),
            "{span:?} should be below {ancestor:?}; trace: {self:#?}"
        );
    }
}

fn parse_trace(body: &Value) -> Option<Trace> {
    let trace = body["data"].as_array()?.first()?;
    let spans = trace["spans"]
        .as_array()?
        .iter()
        .map(|s| {
            let refs = s["references"].as_array().cloned().unwrap_or_default();
            let of_type = |t: &str| -> Vec<String> {
                refs.iter()
                    .filter(|r| r["refType"] == t)
                    .filter_map(|r| r["spanID"].as_str().map(str::to_string))
                    .collect()
            };
            StoredSpan {
                span_id: s["spanID"].as_str().unwrap_or_default().to_string(),
                name: s["operationName"].as_str().unwrap_or_default().to_string(),
                parent: of_type("CHILD_OF").into_iter().next(),
                links: refs
                    .iter()
                    .filter(|r| r["refType"] == "FOLLOWS_FROM")
                    .filter_map(|r| {
                        Some((
                            r["traceID"].as_str()?.to_string(),
                            r["spanID"].as_str()?.to_string(),
                        ))
                    })
                    .collect(),
                tags: s["tags"]
                    .as_array()
                    .map(|tags| {
                        tags.iter()
                            .map(|t| {
                                let value = match &t["value"] {
                                    Value::String(v) => v.clone(),
                                    other => other.to_string(),
                                };
                                (t["key"].as_str().unwrap_or_default().to_string(), value)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    Some(Trace { spans })
}

/// Trace `trace_id` as Jaeger holds it now (`Err` saying why there is none yet).
pub async fn fetch_trace(query_url: &str, trace_id: &str) -> Result<Trace, String> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{query_url}/api/traces/{trace_id}");
    let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    parse_trace(&body).ok_or_else(|| format!("no trace {trace_id} yet: {body}"))
}

/// Polls Jaeger until trace `trace_id` holds a span of each of `names`; returns it.
pub async fn wait_for_spans(
    query_url: &str,
    trace_id: &str,
    names: &[&str],
    deadline: Duration,
) -> Trace {
    poll_until(
        deadline,
        &format!("spans {names:?} in trace {trace_id}"),
        || async move {
            let trace = fetch_trace(query_url, trace_id).await?;
            let missing: Vec<&&str> = names.iter().filter(|n| trace.named(n).is_none()).collect();
            if missing.is_empty() {
                Ok(trace)
            } else {
                Err(format!("missing {missing:?}; have: {}", trace.names()))
            }
        },
    )
    .await
}
