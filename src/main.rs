//! The `order-service` command: `serve` (default), `api`, `worker`, `seed`, and the on-call's
//! `dlq list | redrive` and `orders stuck` (see `oncall`).

use clap::{Parser, Subcommand};
use order_service::oncall::{self, Redrive};
use order_service::{app, config::Config, telemetry};

#[derive(Parser)]
#[command(
    name = "order-service",
    version,
    about = "Event-driven order processing service"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// API and worker in one process (the default).
    Serve,
    /// The HTTP API only; run `worker` processes to process orders.
    Api,
    /// The queue worker only (with /metrics, /health and /ready on METRICS_PORT).
    Worker,
    /// Creates the demo data (idempotent) and exits.
    Seed,
    /// Inspect and return dead-lettered queue messages (SQS's dead-letter queue, or the
    /// embedded queue's dead letters).
    Dlq {
        #[command(subcommand)]
        action: DlqCommand,
    },
    /// Inspect orders.
    Orders {
        #[command(subcommand)]
        action: OrdersCommand,
    },
}

#[derive(Subcommand, Clone)]
enum DlqCommand {
    /// Lists dead letters, oldest first, one JSON object per line.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = oncall::DEFAULT_LIST_LIMIT)]
        limit: usize,
    },
    /// Moves dead letters back onto the queue: the ones named, or every one with --all.
    Redrive {
        /// Every dead letter.
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        all: bool,
        /// Message ids, as `dlq list` shows them.
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Clone)]
enum OrdersCommand {
    /// Lists orders pending or processing unchanged past a bound, oldest change first.
    Stuck {
        /// The bound, e.g. 10m or 2h (default: ORDER_STUCK_AFTER).
        #[arg(long, value_parser = parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    order_service::duration::parse_duration(s)
}

/// Keeps glibc from holding on to large freed blocks. By default glibc raises its mmap
/// threshold to the size of the largest block freed, so after one argon2 hash (19 MiB, e.g.
/// seeding's) every later large allocation comes from its arenas and stays resident when freed.
/// A fixed threshold keeps large blocks mmapped and returned on free. (The hashing threads keep
/// their own argon2 memory anyway; see `password`.)
fn return_large_frees_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// How often memory freed after a burst is handed back to the system.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// glibc keeps freed memory in its per-thread arenas for reuse, so a burst (thousands of
/// connections and requests at once) left the process at its peak size for good. Trimming
/// every few seconds returns the free pages (`malloc_trim` releases whole free pages anywhere
/// in the heaps, not only at their ends); memory in use is untouched.
fn trim_freed_memory_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let _ = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_INTERVAL);
            // SAFETY: malloc_trim only inspects and releases the allocator's free memory.
            unsafe {
                libc::malloc_trim(0);
            }
        });
}

fn main() -> std::process::ExitCode {
    return_large_frees_to_the_system();
    trim_freed_memory_periodically();
    let cli = Cli::parse();
    // A missing .env is normal; a broken one is worth stopping for.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("order-service: could not read .env: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("order-service: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    // The on-call's commands print their answer on stdout, where the logs would go: they log
    // nothing, and say what went wrong on stderr.
    let tool = matches!(command, Command::Dlq { .. } | Command::Orders { .. });
    // Dropped at the end of main: the spans still queued are sent before the process exits.
    let _traces = (!tool).then(|| telemetry::init(config.log_format, config.trace_export.as_ref()));
    let result = actix_web::rt::System::new().block_on(async move {
        match command {
            Command::Serve => app::run(config, app::Role::Serve).await,
            Command::Api => app::run(config, app::Role::Api).await,
            Command::Worker => app::run(config, app::Role::Worker).await,
            Command::Seed => app::seed_only(config).await,
            Command::Dlq {
                action: DlqCommand::List { limit },
            } => oncall::dlq_list(config, limit).await,
            Command::Dlq {
                action: DlqCommand::Redrive { all, ids },
            } => {
                let which = if all { Redrive::All } else { Redrive::Ids(ids) };
                oncall::dlq_redrive(config, which).await
            }
            Command::Orders {
                action: OrdersCommand::Stuck { older_than, limit },
            } => oncall::orders_stuck(config, older_than, limit).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "order-service stopped with an error");
            eprintln!("order-service: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
