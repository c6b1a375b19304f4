//! Wiring: backends chosen by configuration → supervised actors → HTTP server, and the
//! graceful shutdown that unwinds it (stop accepting, finish requests, finish queue messages).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::prelude::*;
use actix_cors::Cors;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};

use crate::actors::admission::Admission;
use crate::actors::auth::{start_password_hasher, AuthActor};
use crate::actors::enqueued_marks::EnqueuedMarks;
use crate::actors::holds::HoldClears;
use crate::actors::inventory::InventoryActor;
use crate::actors::mailer::MailerActor;
use crate::actors::order::OrderActor;
use crate::actors::sqs_poller::SqsPollerActor;
use crate::authenticator::Authenticator;
use crate::backends::BackendKinds;
use crate::cache::none::NoCache;
use crate::coalesce::Batching;
use crate::config::Config;
use crate::http::{self, extract::BodyLimit, ApiState};
use crate::messages::sqs_poller::StopPolling;
use crate::queue::batcher::{self, SendBatcher};
use crate::throttle::LoginThrottle;
use crate::tokens::TokenService;

/// Which parts of the service this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// API and worker in one process (the default).
    Serve,
    /// HTTP API only; orders are processed by separate `worker` processes.
    Api,
    /// Queue worker only, with `/metrics`, `/health` and `/ready` on `METRICS_PORT`.
    Worker,
}

impl Role {
    fn serves_api(self) -> bool {
        matches!(self, Role::Serve | Role::Api)
    }
    fn runs_worker(self) -> bool {
        matches!(self, Role::Serve | Role::Worker)
    }
}

/// SIGTERM (orchestrators) and SIGINT (Ctrl-C), listened for from the first moment of `run`.
/// Until a process listens, a SIGTERM takes the default action and ends it at once, uncleanly:
/// the chaos campaign's SIGTERM that landed a few milliseconds after a restart ended the worker
/// by the signal instead of a clean exit. A signal caught before serving ends the start-up;
/// one caught later, the run (a stream keeps a signal that came before it was awaited).
struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn listen() -> anyhow::Result<ShutdownSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignal {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignal {})
    }

    /// Resolves at the first SIGTERM or SIGINT.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How queue sends are batched: SQS bills per request and answers in milliseconds, so sends
/// wait a little for company and several batches go out at once; the embedded queue does not.
fn send_batching(kinds: BackendKinds) -> Batching {
    if kinds.queue_is_remote() {
        batcher::REMOTE
    } else {
        batcher::LOCAL
    }
}

/// Cross-origin access for the configured origins only. With none configured the middleware is
/// left out entirely, so browsers apply their same-origin rule (and same-origin pages such as
/// Swagger UI keep working).
fn cors(origins: &[String]) -> Cors {
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(["GET", "POST", "PATCH", "OPTIONS"])
        .allowed_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            // A fetch-based status stream resuming after a reconnect (`http::order_events`).
            "last-event-id",
            "x-request-id",
            "traceparent",
            "tracestate",
        ])
        .expose_headers([
            "x-request-id",
            "location",
            "retry-after",
            "traceresponse",
            "x-trace-id",
        ])
        .max_age(600)
}

/// Runs the process in `role` until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    let mut shutdown = ShutdownSignal::listen()?;
    crate::deadline::set_backend_timeout(config.backend_timeout);
    let prometheus = crate::metrics::install()?;
    // Connecting may wait for a backend that is down: a signal meanwhile ends the start-up,
    // cleanly, with nothing yet in flight.
    let backends = tokio::select! {
        backends = crate::backends::build(&config) => backends?,
        () = shutdown.recv() => {
            tracing::info!("shutdown signal during start-up: exiting before serving");
            return Ok(());
        }
    };
    let kinds = backends.kinds;
    crate::telemetry::spans::set_backend_kinds(kinds);
    metrics::gauge!(
        crate::metrics::BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "store" => kinds.store,
        "queue" => kinds.queue,
        "cache" => kinds.cache,
        "mailer" => kinds.mailer,
        "role" => format!("{role:?}").to_lowercase()
    )
    .set(1.0);
    tracing::info!(
        ?role,
        store = kinds.store,
        queue = kinds.queue,
        cache = kinds.cache,
        mailer = kinds.mailer,
        "starting"
    );
    // In the background: SQS may be unreachable at start, and `/ready` asks again until it answers.
    let redrive = backends.redrive.clone();
    actix_web::rt::spawn(async move { redrive.warning().await });

    crate::retention::Sweep {
        backends: backends.clone(),
        settings: config.retention.clone(),
        mail_dir: (kinds.mailer == "file").then(|| config.mail_dir.clone()),
    }
    .start();

    // Only API processes seed, so `api` and `worker` starting together do not race to do it.
    if role.serves_api() && !config.is_production() && backends.stores.health.is_empty().await? {
        let report = crate::seed::seed(&backends.stores).await?;
        tracing::info!(
            users = report.users,
            products = report.products,
            orders = report.orders,
            "empty database in development mode: seeded demo data (admin@example.com / admin123, user@example.com / user123)"
        );
    }

    // An in-process cache is only coherent inside one process: split roles on the embedded
    // backends read through to the store (login-throttle counters stay per process).
    // The throttle's state never shares room with cached orders (see `cache::security`).
    let throttle_cache =
        crate::cache::security::security_state(&backends.cache, kinds.cache_is_in_process());
    let mut backends = backends;
    if role != Role::Serve && kinds.cache_is_in_process() {
        tracing::info!("embedded cache disabled: api and worker run as separate processes");
        backends.cache = Arc::new(NoCache);
    }
    let tokens = Arc::new(TokenService::new(&config.jwt));
    let authenticator = Arc::new(Authenticator::new(
        tokens.clone(),
        backends.stores.accounts.clone(),
        backends.cache.clone(),
    ));

    // Each actor gets its own arbiter (thread), so one busy actor does not slow the others.
    let inventory = {
        let catalogue = backends.stores.catalogue.clone();
        let holds = HoldClears::start(catalogue.clone());
        let (hold_expiry, sweeping) = (config.stock_hold_expiry, Arc::new(AtomicBool::new(false)));
        Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| InventoryActor {
            catalogue: catalogue.clone(),
            holds: holds.clone(),
            hold_expiry,
            sweeping: sweeping.clone(),
        })
    };
    let mailer = {
        let mailer = backends.mailer.clone();
        Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| MailerActor { mailer })
    };
    let admission = Admission::new(config.max_orders_in_flight, config.max_queue_backlog);
    if role.serves_api() {
        crate::actors::backlog::watch(
            backends.queue.clone(),
            admission.clone(),
            crate::actors::backlog::probe_interval(kinds.queue_is_remote()),
        );
    }
    // Status events: this process's bus, and what carries other processes' changes to it.
    // A `serve` process on the embedded store is the only one writing to it, so its own bus
    // sees every change; any other API process may have workers elsewhere.
    let bus = crate::events::bus::Bus::new();
    let events = crate::events::start(
        &bus,
        config.redis.as_ref(),
        role.serves_api(),
        !(role == Role::Serve && kinds.store == "sqlite"),
        config.events.store_poll_interval,
        backends.stores.orders.clone(),
    );
    let order_actor = OrderActor {
        orders: backends.stores.orders.clone(),
        idempotency: backends.stores.idempotency.clone(),
        accounts: backends.stores.accounts.clone(),
        cache: backends.cache.clone(),
        sender: SendBatcher::start(backends.queue.clone(), send_batching(kinds)),
        enqueued: EnqueuedMarks::start(backends.stores.orders.clone()),
        inventory: inventory.clone(),
        mailer: mailer.clone(),
        cache_ttl: config.cache_ttl,
        processing_time: config.queue.processing_time,
        outbox_busy: Arc::new(AtomicBool::new(false)),
        runs_outbox: true,
        admission: admission.clone(),
        stuck_after: config.queue.stuck_after,
        emails: config.email.clone(),
        events,
    };
    let orders = {
        let actor = order_actor.clone();
        Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| actor.clone())
    };
    let auth = {
        let actor = AuthActor {
            accounts: backends.stores.accounts.clone(),
            tokens: tokens.clone(),
            authenticator: authenticator.clone(),
            hasher: start_password_hasher(),
            throttle: Arc::new(LoginThrottle::new(
                throttle_cache.clone(),
                config.login_limits.clone(),
            )),
            reuse: Arc::new(crate::refresh_reuse::RefreshReuse::new(
                throttle_cache.clone(),
                config.jwt.refresh_reuse_interval,
            )),
        };
        Supervisor::start_in_arbiter(&Arbiter::new().handle(), move |_| actor.clone())
    };
    let poller = role.runs_worker().then(|| {
        // Queue processing has an OrderActor of its own, on the poller's thread: a flood of new
        // orders can not queue ahead of the work that completes them (under overload they
        // would share one mailbox and completions would stall), and a message reaches its
        // handler without crossing threads.
        let arbiter = Arbiter::new().handle();
        let processor = OrderActor {
            runs_outbox: false,
            ..order_actor.clone()
        };
        let processing = Supervisor::start_in_arbiter(&arbiter, move |_| processor.clone());
        let (queue, settings) = (backends.queue.clone(), config.queue.clone());
        Supervisor::start_in_arbiter(&arbiter, move |_| {
            SqsPollerActor::new(queue.clone(), processing.clone(), settings.clone())
        })
    });

    let state = web::Data::new(ApiState {
        auth,
        inventory,
        orders,
        authenticator,
        admission,
        readiness: Arc::new(backends.clone()),
        client_address: http::client_address::ClientAddressSource::new(
            config.trust_proxy_headers,
            config.trust_proxy_hops,
        ),
        events: Arc::new(crate::events::streams::Streams {
            bus: bus.clone(),
            orders: backends.stores.orders.clone(),
            heartbeat: config.events.heartbeat,
        }),
    });
    let prometheus_data = web::Data::new(prometheus);
    let body_limit = BodyLimit(config.body_limit_bytes);
    let serves_api = role.serves_api();
    let port = if serves_api {
        config.port
    } else {
        config.metrics_port
    };

    let cors_origins = config.cors_allowed_origins.clone();

    let server = HttpServer::new(move || {
        let app = App::new()
            .app_data(state.clone())
            .app_data(prometheus_data.clone())
            .app_data(body_limit)
            .wrap(Condition::new(
                !cors_origins.is_empty(),
                cors(&cors_origins),
            ))
            .wrap(from_fn(http::middleware::observe));
        if serves_api {
            app.configure(http::api)
        } else {
            app.configure(http::operations)
        }
    })
    .shutdown_timeout(config.shutdown_timeout.as_secs())
    // A status stream writes one small event at a time: with Nagle's algorithm each event
    // after the first waited for the ACK of the one before, which the client delays by up to
    // 40 ms (measured: a completion reached a stream 40 ms after it happened). A whole
    // response is one write, so nothing else changes.
    .tcp_nodelay(true)
    // Our own signal handling below: actix-server's would stop the whole actor system right
    // after the HTTP drain, before the worker could finish its queue messages.
    .disable_signals()
    .bind((config.host.as_str(), port))?;
    for addr in server.addrs() {
        // Exactly this line on stdout: scripts and tests wait for it to know the port.
        println!("order-service listening on http://{addr}");
    }
    tracing::info!(addrs = ?server.addrs(), "listening");

    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.recv().await;
        tracing::info!("shutdown signal: no new connections; finishing requests in flight");
        // Open status streams would hold the drain for the whole timeout: they end now, and
        // their clients resume elsewhere with Last-Event-ID.
        bus.close();
        handle.stop(true).await;
    });
    server.await?;
    tracing::info!("HTTP server stopped; finishing queue messages in flight");
    if let Some(poller) = poller {
        let drained = tokio::time::timeout(config.shutdown_timeout, poller.send(StopPolling)).await;
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "worker unavailable at shutdown; its messages will be redelivered"),
            Err(_) => tracing::warn!("shutdown timeout reached with queue messages still in flight; they will be redelivered"),
        }
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// `order-service seed`: seeds the configured store and exits.
pub async fn seed_only(config: Config) -> anyhow::Result<()> {
    let backends = crate::backends::build(&config).await?;
    let report = crate::seed::seed(&backends.stores).await?;
    if report.changed_anything() {
        tracing::info!(
            users = report.users,
            products = report.products,
            orders = report.orders,
            "seeded demo data"
        );
    } else {
        tracing::info!("demo data already present; nothing changed");
    }
    Ok(())
}
