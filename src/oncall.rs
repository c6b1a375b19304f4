//! The on-call's commands (`order-service dlq list | redrive`, `order-service orders stuck`):
//! one-shot runs against the configured backends, the same ones the service uses. Each prints
//! one JSON object per line on stdout (for `jq` and scripts) and a one-line summary on stderr;
//! the README's "On-call" section says when to run which.

use std::time::Duration;

use serde_json::json;

use crate::backends::Backends;
use crate::config::Config;
use crate::queue::OrderMessage;

/// Dead letters shown by `dlq list` unless `--limit` says otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// What to redrive: every dead letter, or the ones named.
#[derive(Clone, Debug)]
pub enum Redrive {
    All,
    Ids(Vec<String>),
}

async fn backends(config: &Config) -> anyhow::Result<Backends> {
    crate::deadline::set_backend_timeout(config.backend_timeout);
    crate::backends::build(config).await
}

/// The order a message body names, if it is one of ours.
fn order_of(body: &str) -> Option<String> {
    serde_json::from_str::<OrderMessage>(body)
        .ok()
        .map(|m| m.order_id.to_string())
}

/// `dlq list`: the dead letters, oldest first.
pub async fn dlq_list(config: Config, limit: usize) -> anyhow::Result<()> {
    let backends = backends(&config).await?;
    let letters = backends.queue.dead_letters(limit).await?;
    for d in &letters {
        let line = json!({
            "messageId": d.message_id,
            "orderId": order_of(&d.body),
            "receiveCount": d.receive_count,
            "at": d.moved_at,
            "body": d.body,
        });
        println!("{line}");
    }
    eprintln!("{} dead letter(s)", letters.len());
    Ok(())
}

/// `dlq redrive`: moves dead letters back onto the queue. Fails when an id named was not found.
pub async fn dlq_redrive(config: Config, which: Redrive) -> anyhow::Result<()> {
    let backends = backends(&config).await?;
    let moved = match &which {
        Redrive::All => backends.queue.redrive(None).await?,
        Redrive::Ids(ids) => backends.queue.redrive(Some(ids)).await?,
    };
    for id in &moved {
        println!("{}", json!({ "messageId": id, "redriven": true }));
    }
    eprintln!("{} message(s) back on the queue", moved.len());
    if let Redrive::Ids(ids) = which {
        let missing: Vec<&String> = ids.iter().filter(|id| !moved.contains(id)).collect();
        if !missing.is_empty() {
            anyhow::bail!("no dead letter with id {missing:?}");
        }
    }
    Ok(())
}

/// `orders stuck`: orders pending or processing unchanged for `older_than`, oldest change first.
pub async fn orders_stuck(
    config: Config,
    older_than: Option<Duration>,
    limit: u32,
) -> anyhow::Result<()> {
    let older_than = older_than.unwrap_or(config.queue.stuck_after);
    let backends = backends(&config).await?;
    let orders = &backends.stores.orders;
    let before = crate::domain::now()
        - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let ids = orders.stuck_orders(before, limit).await?;
    let mut shown = 0;
    for id in ids {
        // Moved on since the query: no longer stuck.
        let Some(order) = orders.find_order(id).await? else {
            continue;
        };
        if order.status.is_terminal() {
            continue;
        }
        shown += 1;
        let line = json!({
            "orderId": order.id,
            "status": order.status,
            "userId": order.user_id,
            "createdAt": order.created_at,
            "updatedAt": order.updated_at,
        });
        println!("{line}");
    }
    eprintln!(
        "{shown} order(s) not terminal and unchanged for {}",
        humantime(older_than)
    );
    Ok(())
}

fn humantime(d: Duration) -> String {
    format!("{}s", d.as_secs())
}
