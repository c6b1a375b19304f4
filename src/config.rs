//! The only place that reads the environment. Variable names are those of the Node.js service
//! we replace, so its `.env` files work unchanged; a few of our own are added (documented in
//! `.env.example`). Every value is parsed once, at start: a bad one stops the process with a
//! message naming the variable and what it expects.
//!
//! A little over 600 lines on purpose: being the one file that names every variable is what
//! makes it the place to look, and a hundred of the lines are its tests.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::Email;
use crate::duration::parse_duration;

/// A value that must never reach logs, errors or responses.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub access_secret: Secret,
    pub refresh_secret: Secret,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// How long a spent refresh token still returns the pair it was spent for (0: never).
    pub refresh_reuse_interval: Duration,
    pub issuer: String,
    pub audience: String,
}

#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub password: Option<Secret>,
}

#[derive(Clone, Debug)]
pub struct AwsConfig {
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub sqs_queue_url: Option<String>,
    pub ses_sender_email: Option<Email>,
}

#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// How long a received message stays hidden while a worker processes it.
    pub visibility_timeout: Duration,
    /// Receives after which a message that keeps failing goes to the dead-letter queue.
    pub max_receives: u32,
    /// Long-poll wait of one receive call.
    pub wait_time: Duration,
    /// Messages processed at once by one worker.
    pub worker_concurrency: usize,
    /// Time the fulfilment step of processing takes (0 by default): stands for the work a real
    /// deployment does there, and lets demos and fault tests see orders in `processing`.
    pub processing_time: Duration,
    /// An order pending or processing unchanged this long is stranded and sent again
    /// (`ORDER_STUCK_AFTER`).
    pub stuck_after: Duration,
}

/// Customer emails: when an unsent one is sent again, and how long records are kept.
#[derive(Clone, Debug)]
pub struct EmailSettings {
    /// An email claimed this long ago and never marked sent is sent again by the sweeper
    /// (`EMAIL_RESEND_AFTER`): longer than the mailer's longest send with its retries.
    pub resend_after: Duration,
    /// How long the record of a sent email is kept (`NOTIFICATION_RETENTION`); an order that
    /// reached its status longer ago than this is not emailed again by a late message.
    pub record_retention: Duration,
}

/// What the embedded backends delete when it is past its use (see `retention`).
#[derive(Clone, Debug)]
pub struct RetentionSettings {
    /// How often the embedded store and queue are swept (`RETENTION_SWEEP_INTERVAL`).
    pub sweep_interval: Duration,
    /// Dead letters older than this are deleted (`DEAD_LETTER_RETENTION`).
    pub dead_letters: Duration,
    /// Sessions expired longer ago than this are deleted (`SESSION_RETENTION`).
    pub expired_sessions: Duration,
    /// `MAIL_DIR` day directories older than this many days are deleted
    /// (`MAIL_RETENTION_DAYS`); 0 keeps them all.
    pub mail_days: u32,
}

/// Order status streams (see `events`).
#[derive(Clone, Debug)]
pub struct EventSettings {
    /// How often an idle stream sends a `: keep-alive` comment (`SSE_HEARTBEAT_INTERVAL`).
    pub heartbeat: Duration,
    /// How often an `api` process without Redis reads the store for changes made by workers,
    /// while it has streams open (`SSE_STORE_POLL_INTERVAL`).
    pub store_poll_interval: Duration,
}

/// Login throttling (see `throttle`).
#[derive(Clone, Debug)]
pub struct LoginLimits {
    pub max_failures_per_email: u64,
    pub max_failures_per_ip: u64,
    pub failure_window: Duration,
    /// All login attempts (successful too) from one address per minute.
    pub max_attempts_per_ip_per_minute: u64,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub environment: Environment,
    pub host: String,
    pub port: u16,
    /// Port of the metrics/health listener of a `worker` process (which serves no API).
    pub metrics_port: u16,
    pub jwt: JwtConfig,
    pub data_dir: PathBuf,
    pub mail_dir: PathBuf,
    pub mongodb_uri: Option<Secret>,
    pub redis: Option<RedisConfig>,
    pub cache_ttl: Duration,
    pub aws: AwsConfig,
    pub queue: QueueSettings,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    pub body_limit_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
    pub login_limits: LoginLimits,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_proxy_headers: bool,
    /// Proxies of ours in front of the service, when `trust_proxy_headers` (at least 1).
    pub trust_proxy_hops: usize,
    /// Order creations one process runs at once; more are shed with 503 `overloaded`.
    pub max_orders_in_flight: usize,
    /// Orders waiting in the queue past which creations are shed with 503 `overloaded`; 0 off.
    pub max_queue_backlog: u64,
    /// A stock hold this old whose order was never stored is given back (`STOCK_HOLD_EXPIRY`):
    /// well past `BACKEND_TIMEOUT`, so no order insert is still in flight under it.
    pub stock_hold_expiry: Duration,
    /// OTLP trace export, when `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` is set.
    pub trace_export: Option<crate::telemetry::settings::TraceExport>,
    /// Bound on every backend call (`BACKEND_TIMEOUT`, see `deadline`).
    pub backend_timeout: Duration,
    pub email: EmailSettings,
    pub retention: RetentionSettings,
    pub events: EventSettings,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// Secrets shipped in `.env.example` and by the old service's docs: refused in production.
const EXAMPLE_SECRETS: &[&str] = &[
    "change-me-access-secret-at-least-32-characters",
    "change-me-refresh-secret-at-least-32-characters",
    "your_jwt_secret",
    "your_jwt_refresh_secret",
    "your-secret-key",
    "secret",
];
const DEV_ACCESS_SECRET: &str = "development-only-access-secret-not-for-production";
const DEV_REFRESH_SECRET: &str = "development-only-refresh-secret-not-for-production";
const MIN_PRODUCTION_SECRET_LEN: usize = 32;

impl Config {
    /// Reads the process environment (after `.env` was loaded by `main`).
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads through `lookup`, so tests can pass a map instead of mutating the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut r = Reader {
            lookup: &lookup,
            errors: vec![],
        };

        let environment = match r.get("NODE_ENV").or_else(|| r.get("APP_ENV")).as_deref() {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("test") => Environment::Test,
            Some("production") | Some("prod") => Environment::Production,
            Some(_) => {
                r.errors
                    .push("NODE_ENV: expected development, test or production".into());
                Environment::Development
            }
        };
        let host = r.get("HOST").unwrap_or_else(|| "0.0.0.0".into());
        let port = r.parse("PORT", 3000u16, "a TCP port number (0-65535)");
        let metrics_port = r.parse("METRICS_PORT", 9091u16, "a TCP port number (0-65535)");

        let access_secret = r.secret("JWT_SECRET", environment, DEV_ACCESS_SECRET);
        let refresh_secret = r.secret("JWT_REFRESH_SECRET", environment, DEV_REFRESH_SECRET);
        if access_secret.is_some()
            && access_secret == refresh_secret
            && environment == Environment::Production
        {
            r.errors
                .push("JWT_REFRESH_SECRET: must differ from JWT_SECRET".into());
        }
        let access_ttl = r.duration("JWT_EXPIRATION", Duration::from_secs(3600));
        let refresh_ttl = r.duration("JWT_REFRESH_EXPIRATION", Duration::from_secs(7 * 86400));
        // Zero is allowed here: it turns the interval off.
        let refresh_reuse_interval = match r.get("REFRESH_REUSE_INTERVAL").as_deref() {
            Some("0") => Duration::ZERO,
            _ => r.duration("REFRESH_REUSE_INTERVAL", Duration::from_secs(10)),
        };

        let data_dir = PathBuf::from(r.get("DATA_DIR").unwrap_or_else(|| "./data".into()));
        let mail_dir = r
            .get("MAIL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("mail"));

        let mongodb_uri = r.get("MONGODB_URI").map(Secret::new);
        let redis = r.get("REDIS_HOST").map(|host| RedisConfig {
            host,
            port: 6379,
            password: None,
        });
        let redis_port = r.parse("REDIS_PORT", 6379u16, "a TCP port number (0-65535)");
        let redis_password = r.get("REDIS_PASSWORD").map(Secret::new);
        let redis = redis.map(|c| RedisConfig {
            port: redis_port,
            password: redis_password,
            ..c
        });
        let cache_ttl =
            Duration::from_secs(r.parse("REDIS_CACHE_EXPIRATION", 600u64, "a number of seconds"));

        let ses_sender_email = r
            .get("AWS_SES_SENDER_EMAIL")
            .and_then(|v| match Email::parse(&v) {
                Ok(e) => Some(e),
                Err(m) => {
                    r.errors.push(format!("AWS_SES_SENDER_EMAIL: {m}"));
                    None
                }
            });
        let aws = AwsConfig {
            region: r.get("AWS_REGION"),
            access_key_id: r.get("AWS_ACCESS_KEY_ID"),
            secret_access_key: r.get("AWS_SECRET_ACCESS_KEY").map(Secret::new),
            sqs_queue_url: r.get("AWS_SQS_QUEUE_URL"),
            ses_sender_email,
        };

        let queue = QueueSettings {
            visibility_timeout: r.duration("QUEUE_VISIBILITY_TIMEOUT", Duration::from_secs(30)),
            max_receives: r.parse(
                "QUEUE_MAX_RECEIVES",
                5u32,
                "a whole number of receives from 1",
            ),
            wait_time: r.duration("QUEUE_WAIT_TIME", Duration::from_secs(20)),
            stuck_after: r.duration("ORDER_STUCK_AFTER", Duration::from_secs(600)),
            worker_concurrency: r.parse("WORKER_CONCURRENCY", 50usize, "a whole number from 1"),
            // The one duration that may be zero (the default: fulfilment takes no time).
            processing_time: match r.get("ORDER_PROCESSING_TIME") {
                None => Duration::ZERO,
                Some(v) => parse_duration(&v).unwrap_or_else(|reason| {
                    r.errors.push(format!(
                        "ORDER_PROCESSING_TIME: expected a duration like 500ms or 2s, got {v:?} ({reason})"
                    ));
                    Duration::ZERO
                }),
            },
        };
        if queue.max_receives == 0 {
            r.errors
                .push("QUEUE_MAX_RECEIVES: expected a whole number from 1".into());
        }
        if queue.worker_concurrency == 0 {
            r.errors
                .push("WORKER_CONCURRENCY: expected a whole number from 1".into());
        }
        if queue.wait_time > Duration::from_secs(20) {
            r.errors
                .push("QUEUE_WAIT_TIME: expected at most 20s (the SQS long-poll limit)".into());
        }

        let log_format = match r.get("LOG_FORMAT").as_deref() {
            None | Some("text") | Some("pretty") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => {
                r.errors.push("LOG_FORMAT: expected text or json".into());
                LogFormat::Text
            }
        };
        let trace_export = crate::telemetry::settings::parse(|k| r.get(k)).unwrap_or_else(|e| {
            r.errors.extend(e);
            None
        });
        let shutdown_timeout = r.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(30));
        let backend_timeout =
            r.duration("BACKEND_TIMEOUT", crate::deadline::DEFAULT_BACKEND_TIMEOUT);
        let body_limit_bytes = r.parse("BODY_LIMIT_BYTES", 1_048_576usize, "a number of bytes");
        let cors_allowed_origins = r
            .get("CORS_ALLOWED_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();

        let login_limits = LoginLimits {
            max_failures_per_email: r.parse("LOGIN_MAX_FAILURES_PER_EMAIL", 5u64, "a whole number"),
            max_failures_per_ip: r.parse("LOGIN_MAX_FAILURES_PER_IP", 50u64, "a whole number"),
            failure_window: r.duration("LOGIN_FAILURE_WINDOW", Duration::from_secs(900)),
            max_attempts_per_ip_per_minute: r.parse(
                "LOGIN_MAX_ATTEMPTS_PER_IP_PER_MINUTE",
                6000u64,
                "a whole number",
            ),
        };
        let stock_hold_expiry = r.duration("STOCK_HOLD_EXPIRY", Duration::from_secs(120));
        if stock_hold_expiry < backend_timeout * 3 {
            r.errors.push(
                "STOCK_HOLD_EXPIRY: expected at least three times BACKEND_TIMEOUT, so that no \
                 write is still in flight when a hold is given back"
                    .into(),
            );
        }
        let max_orders_in_flight =
            r.parse("MAX_ORDERS_IN_FLIGHT", 1024usize, "a whole number from 1");
        if max_orders_in_flight == 0 {
            r.errors
                .push("MAX_ORDERS_IN_FLIGHT: expected a whole number from 1".into());
        }
        let max_queue_backlog = r.parse("MAX_QUEUE_BACKLOG", 2000u64, "a whole number");
        let trust_proxy_headers = match r.get("TRUST_PROXY_HEADERS").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => {
                r.errors
                    .push("TRUST_PROXY_HEADERS: expected true or false".into());
                false
            }
        };
        let trust_proxy_hops = r.parse("TRUST_PROXY_HOPS", 1usize, "a whole number from 1");
        if trust_proxy_hops == 0 {
            r.errors
                .push("TRUST_PROXY_HOPS: expected a whole number from 1".into());
        }

        let email = EmailSettings {
            resend_after: r.duration("EMAIL_RESEND_AFTER", Duration::from_secs(300)),
            record_retention: r.duration("NOTIFICATION_RETENTION", Duration::from_secs(30 * 86400)),
        };
        let retention = RetentionSettings {
            sweep_interval: r.duration("RETENTION_SWEEP_INTERVAL", Duration::from_secs(3600)),
            dead_letters: r.duration("DEAD_LETTER_RETENTION", Duration::from_secs(14 * 86400)),
            expired_sessions: r.duration("SESSION_RETENTION", Duration::from_secs(86400)),
            mail_days: r.parse(
                "MAIL_RETENTION_DAYS",
                30u32,
                "a whole number of days (0: keep all)",
            ),
        };
        let events = EventSettings {
            heartbeat: r.duration("SSE_HEARTBEAT_INTERVAL", Duration::from_secs(15)),
            store_poll_interval: r.duration("SSE_STORE_POLL_INTERVAL", Duration::from_millis(500)),
        };

        if !r.errors.is_empty() {
            return Err(ConfigError(r.errors));
        }
        Ok(Config {
            environment,
            host,
            port,
            metrics_port,
            jwt: JwtConfig {
                access_secret: access_secret.expect("checked above"),
                refresh_secret: refresh_secret.expect("checked above"),
                access_ttl,
                refresh_ttl,
                refresh_reuse_interval,
                issuer: "order-service".into(),
                audience: "order-service-api".into(),
            },
            data_dir,
            mail_dir,
            mongodb_uri,
            redis,
            cache_ttl,
            aws,
            queue,
            log_format,
            trace_export,
            shutdown_timeout,
            body_limit_bytes,
            cors_allowed_origins,
            login_limits,
            trust_proxy_headers,
            trust_proxy_hops,
            max_orders_in_flight,
            max_queue_backlog,
            stock_hold_expiry,
            backend_timeout,
            email,
            retention,
            events,
        })
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// The SQLite file of the embedded store and queue.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("order-service.sqlite3")
    }
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<String>,
}

impl Reader<'_> {
    /// A set, non-blank value; blank counts as unset, as in the dotenv files of the old service.
    fn get(&self, key: &str) -> Option<String> {
        (self.lookup)(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(&mut self, key: &str, default: T, expected: &str) -> T {
        match self.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                self.errors
                    .push(format!("{key}: expected {expected}, got {v:?}"));
                default
            }),
        }
    }

    /// A duration that must not be zero: no expiry, timeout or window here may be instant.
    fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let Some(v) = self.get(key) else {
            return default;
        };
        let reason = match parse_duration(&v) {
            Ok(d) if d.is_zero() => "it must be more than zero".to_string(),
            Ok(d) => return d,
            Err(reason) => reason,
        };
        self.errors.push(format!(
            "{key}: expected a duration like 30s, 15m, 1h or 7d (a bare number is seconds), got {v:?} ({reason})"
        ));
        default
    }

    fn secret(&mut self, key: &str, env: Environment, dev_default: &str) -> Option<Secret> {
        match (self.get(key), env) {
            (None, Environment::Production) => {
                self.errors.push(format!("{key}: required in production"));
                None
            }
            (None, _) => Some(Secret::new(dev_default)),
            (Some(v), Environment::Production)
                if EXAMPLE_SECRETS.contains(&v.as_str()) || v == dev_default =>
            {
                self.errors.push(format!(
                    "{key}: the example value is not allowed in production; set a random secret"
                ));
                None
            }
            (Some(v), Environment::Production) if v.len() < MIN_PRODUCTION_SECRET_LEN => {
                self.errors.push(format!(
                    "{key}: must be at least {MIN_PRODUCTION_SECRET_LEN} characters in production"
                ));
                None
            }
            (Some(v), _) => Some(Secret::new(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_old_service() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(c.jwt.access_ttl, Duration::from_secs(3600));
        assert_eq!(c.jwt.refresh_ttl, Duration::from_secs(7 * 86400));
        assert_eq!(c.cache_ttl, Duration::from_secs(600));
        assert_eq!(c.mail_dir, PathBuf::from("./data/mail"));
        assert!(c.redis.is_none() && c.mongodb_uri.is_none());
    }

    #[test]
    fn bad_values_are_named() {
        let err = config(&[("PORT", "eighty"), ("JWT_EXPIRATION", "soon")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("PORT"), "{text}");
        assert!(text.contains("JWT_EXPIRATION"), "{text}");
    }

    #[test]
    fn production_refuses_missing_or_example_secrets() {
        let err = config(&[("NODE_ENV", "production")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("JWT_SECRET: required") && err.contains("JWT_REFRESH_SECRET: required"),
            "{err}"
        );
        let err = config(&[
            ("NODE_ENV", "production"),
            (
                "JWT_SECRET",
                "change-me-access-secret-at-least-32-characters",
            ),
            ("JWT_REFRESH_SECRET", "short"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("example value"), "{err}");
        assert!(err.contains("at least 32"), "{err}");
        let ok = config(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", "a-very-long-random-production-secret-value-1"),
            (
                "JWT_REFRESH_SECRET",
                "a-very-long-random-production-secret-value-2",
            ),
        ]);
        assert!(ok.unwrap().is_production());
    }

    #[test]
    fn secrets_do_not_print() {
        let c = config(&[("JWT_SECRET", "super-secret-value")]).unwrap();
        assert!(!format!("{c:?}").contains("super-secret-value"));
    }

    #[test]
    fn durations_are_read_as_written_and_zero_is_refused() {
        let c = config(&[
            ("JWT_EXPIRATION", "15m"),
            ("JWT_REFRESH_EXPIRATION", "900"),
            ("LOGIN_FAILURE_WINDOW", "1h 30m"),
            ("ORDER_PROCESSING_TIME", "250ms"),
        ])
        .unwrap();
        assert_eq!(c.jwt.access_ttl, Duration::from_secs(900));
        assert_eq!(c.jwt.refresh_ttl, Duration::from_secs(900));
        assert_eq!(c.login_limits.failure_window, Duration::from_secs(5400));
        assert_eq!(c.queue.processing_time, Duration::from_millis(250));

        let zero_processing = config(&[("ORDER_PROCESSING_TIME", "0")]).unwrap();
        assert_eq!(zero_processing.queue.processing_time, Duration::ZERO);

        let err = config(&[
            ("SHUTDOWN_TIMEOUT", "0s"),
            ("QUEUE_WAIT_TIME", "1 fortnight"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SHUTDOWN_TIMEOUT") && err.contains("more than zero"),
            "{err}"
        );
        assert!(
            err.contains("QUEUE_WAIT_TIME") && err.contains("unknown time unit"),
            "{err}"
        );
    }
}
