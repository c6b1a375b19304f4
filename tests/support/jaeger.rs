//! A throwaway Jaeger (the v2 binary, `github.com/jaegertracing/jaeger` v1.75.0) on free loopback
//! ports: OTLP/HTTP in, in-memory storage, the query HTTP API out. Its own telemetry, health
//! check and other receivers are left out, so several can run at once without fixed ports.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{find_binary, free_port, temp_dir, wait_for_port, ServerProcess};

pub struct Jaeger {
    pub process: ServerProcess,
    /// OTLP/HTTP receiver, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_port: u16,
    /// Query HTTP API (`/api/traces/{id}`, `/api/services`).
    pub query_port: u16,
}

/// Starts Jaeger, or returns `None` (after saying why) when it is not installed.
pub fn start() -> Option<Jaeger> {
    let binary = find_binary("JAEGER_BIN", "jaeger", "see scripts/test (install_jaeger)")?;
    Some(spawn(&binary))
}

fn spawn(binary: &PathBuf) -> Jaeger {
    let otlp_port = free_port();
    let query_port = free_port();
    let query_grpc_port = free_port();
    let dir = temp_dir("jaeger");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 50ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
        ),
    )
    .expect("write the Jaeger config");
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn jaeger");
    wait_for_port(otlp_port, "jaeger (OTLP)", &mut child);
    wait_for_port(query_port, "jaeger (query)", &mut child);
    Jaeger {
        process: ServerProcess::new(child, Some(&dir)),
        otlp_port,
        query_port,
    }
}

impl Jaeger {
    /// The OTLP endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    /// The query API's base URL.
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.query_port)
    }
}
