//! Whether traces are exported, decided from the standard OpenTelemetry variables only.
//!
//! The SDK and the OTLP exporter read `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]` and `OTEL_BSP_*` themselves, as the
//! specification says; here (called from `config`, the one place that reads the environment)
//! they are only checked, so a typo stops the service at start instead of silently sampling
//! nothing or falling back to a default the operator did not choose.

/// Tracing export is on: an endpoint is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceExport {
    /// Where spans go, as given (for the start-up log line; never carries credentials).
    pub endpoint: String,
}

/// Samplers the SDK implements (its `jaeger_remote` and `xray` fall back to always-on: refused).
const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// `None` when no endpoint is set: tracing is off and costs nothing.
pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Option<TraceExport>, Vec<String>> {
    let mut errors = vec![];
    if let Some(protocol) =
        get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        // gRPC would bring tonic and a second HTTP/2 stack into the build for no gain: every
        // collector (and Jaeger) takes OTLP over HTTP.
        if protocol != "http/protobuf" {
            errors.push(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is supported, got {protocol:?}"
            ));
        }
    }
    if let Some(sampler) = get("OTEL_TRACES_SAMPLER") {
        if !SAMPLERS.contains(&sampler.as_str()) {
            errors.push(format!(
                "OTEL_TRACES_SAMPLER: expected one of {}, got {sampler:?}",
                SAMPLERS.join(", ")
            ));
        } else if sampler.ends_with("traceidratio") {
            let ratio = get("OTEL_TRACES_SAMPLER_ARG").map(|a| a.parse::<f64>());
            if !matches!(ratio, Some(Ok(r)) if (0.0..=1.0).contains(&r)) {
                errors.push(
                    "OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1 for the traceidratio samplers"
                        .into(),
                );
            }
        }
    }
    let endpoint =
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if let Some(endpoint) = &endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            errors.push(format!(
                "OTEL_EXPORTER_OTLP_ENDPOINT: expected an http:// URL, got {endpoint:?}"
            ));
        } else if endpoint.starts_with("https://") {
            // No TLS stack is linked for the exporter (see Cargo.toml): say so instead of
            // failing every export.
            errors.push(
                "OTEL_EXPORTER_OTLP_ENDPOINT: https is not supported; send to a local collector over http"
                    .into(),
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(endpoint.map(|endpoint| TraceExport { endpoint }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(vars: &[(&str, &str)]) -> Result<Option<TraceExport>, Vec<String>> {
        parse(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn no_endpoint_means_off() {
        assert_eq!(parsed(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
    }

    #[test]
    fn either_endpoint_variable_turns_it_on() {
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            let on = parsed(&[(var, "http://127.0.0.1:4318")]).unwrap().unwrap();
            assert_eq!(on.endpoint, "http://127.0.0.1:4318");
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
        ] {
            let errors = parsed(&[(var, value)]).unwrap_err();
            assert!(errors[0].starts_with(var), "{errors:?}");
        }
        let errors = parsed(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ])
        .unwrap_err();
        assert!(
            errors[0].starts_with("OTEL_TRACES_SAMPLER_ARG"),
            "{errors:?}"
        );
        assert!(parsed(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25")
        ])
        .is_ok());
    }
}
