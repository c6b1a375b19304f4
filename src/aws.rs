//! What the SQS queue and the SES mailer share: the HTTPS client of every AWS call, loading the
//! AWS configuration from the SDK's standard sources, credentials for local emulators, and the
//! mapping of SDK errors.

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedHttpClient};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use crate::config::AwsConfig;
use crate::error::BackendError;

/// The HTTP client of every AWS SDK client we build: the SDK's own hyper client, with rustls on
/// `ring` rather than the SDK's default `aws-lc` (the same TLS 1.2/1.3 suites AWS endpoints
/// speak; `aws-lc` only adds a post-quantum key exchange, and costs minutes of C build). Roots
/// are the platform's, read by `rustls-native-certs` (which honours `SSL_CERT_FILE`). Plain
/// `http://` endpoints (emulators) go through the same client.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Loads the shared AWS configuration from the standard sources. `aws.region` wins over the
/// environment's region (they are the same variable today, but `Config` may get it elsewhere);
/// without any region we fall back to `us-east-1`, as the service we replace did, rather than
/// failing every call. Credentials are left to the SDK's default chain, which also reads
/// `AWS_SESSION_TOKEN` and instance roles: the config's copies of the keys would lose those.
///
/// The region is left to the loader's own default chain rather than a `RegionProviderChain`
/// of ours: the loader configures its chain (and the credential providers) with our HTTP
/// client, while a chain built outside it has none, and its instance-metadata step panics
/// for want of one when no region is set.
pub async fn load_sdk_config(aws: &AwsConfig, timeouts: TimeoutConfig) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .timeout_config(timeouts);
    if let Some(region) = aws.region.clone() {
        loader = loader.region(Region::new(region));
    }
    let config = loader.load().await;
    if config.region().is_some() {
        return config;
    }
    config
        .into_builder()
        .region(Region::from_static("us-east-1"))
        .build()
}

/// Static placeholder credentials for local emulators (moto, LocalStack), which check none.
pub fn emulator_credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "local-emulator")
}

/// Maps an SDK error: no answer (dispatch, timeout, broken response, a 5xx or throttling) is
/// `Unavailable`, worth a retry; a refusal by the service is `Other`. The text comes from
/// `DisplayErrorContext`, which walks the whole cause chain; it never holds credentials.
pub fn sdk_error<E>(backend: &'static str, operation: &str, e: SdkError<E>) -> BackendError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            service.raw().status().is_server_error()
                || matches!(
                    service.err().code(),
                    Some("ThrottlingException" | "Throttling" | "RequestThrottled")
                )
        }
        _ => false,
    };
    let detail = format!("{operation}: {}", DisplayErrorContext(&e));
    if transient {
        BackendError::unavailable(backend, detail)
    } else {
        BackendError::other(backend, detail)
    }
}
