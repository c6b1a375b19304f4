//! A small PromQL scanner: which metrics an expression selects, with which label matchers, so the
//! dashboards and rules can be checked against the metrics the service defines.

use super::GRAFANA_VARIABLES;

/// The metric a histogram's series belong to: `x_bucket`, `x_count` and `x_sum` are all `x`.
pub fn base_metric(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

pub fn substitute_grafana_variables(expr: &str) -> String {
    let mut out = expr.to_string();
    for (var, value) in GRAFANA_VARIABLES {
        out = out.replace(var, value);
    }
    out
}

/// The vector selectors of a PromQL expression, as (metric name, label matchers inside `{}`).
///
/// A small scanner, not a parser: it skips strings, range/subquery brackets, numbers and
/// durations, and the label lists of `by`/`without`/`on`/`ignoring`/`group_*`; an identifier
/// followed by `(` is a function, an aggregation operator or keyword is skipped, and any other
/// identifier is a metric name, with the matchers that follow it if any.
pub fn selectors(expr: &str) -> Vec<(String, String)> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "nan", "inf"];
    let b = expr.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
        } else if c == b'[' {
            i = skip_to(b, i, b']');
        } else if c == b'{' {
            let end = skip_to(b, i, b'}');
            out.push((String::new(), expr[i + 1..end - 1].to_string()));
            i = end;
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let next = b.get(j).copied();
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if next == Some(b'(') {
                    i = skip_to(b, j, b')');
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
                || next == Some(b'(')
            {
                // An operator, a function call or an aggregation: not a metric.
            } else if next == Some(b'{') {
                let end = skip_to(b, j, b'}');
                out.push((word.to_string(), expr[j + 1..end - 1].to_string()));
                i = end;
            } else {
                out.push((word.to_string(), String::new()));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Index just past the string literal starting at `start`.
pub fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() && b[i] != quote {
        i += if b[i] == b'\\' && quote != b'`' { 2 } else { 1 };
    }
    (i + 1).min(b.len())
}

/// Index just past the `close` that ends the group opened at `start`, skipping strings inside.
pub fn skip_to(b: &[u8], start: usize, close: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() && b[i] != close {
        i = if matches!(b[i], b'"' | b'\'' | b'`') {
            skip_string(b, i)
        } else {
            i + 1
        };
    }
    (i + 1).min(b.len())
}

#[test]
pub fn the_selector_scanner_finds_metrics_and_their_matchers() {
    let found = selectors(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route=~"/api/.*", instance=~"$instance"}[$__rate_interval])))
           / on (route) group_left(job) sum without (le) (up) or vector(0) > bool 1 offset 5m"#,
    );
    assert_eq!(
        found,
        vec![
            (
                "http_request_duration_seconds_bucket".to_string(),
                r#"route=~"/api/.*", instance=~"$instance""#.to_string()
            ),
            ("up".to_string(), String::new()),
        ]
    );
    assert_eq!(base_metric("x_seconds_bucket"), "x_seconds");
    assert_eq!(
        substitute_grafana_variables(r#"rate(x{instance=~"$instance"}[$__rate_interval])"#),
        r#"rate(x{instance=~".*"}[30s])"#
    );
}
