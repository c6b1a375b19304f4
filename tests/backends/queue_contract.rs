//! The `Queue` contract (SQS semantics), written once and run against the embedded queue
//! (`SqliteQueue` on a fresh SQLite file) and the real one (`SqsQueue` on a throwaway moto
//! server, with a fresh queue and dead-letter queue per test). The real variants return early,
//! with a SKIPPED line, when moto is not installed.
//!
//! Visibility timeouts are whole seconds here because SQS counts in seconds. Waits are bounded
//! polls or long polls, never sleeps standing in for synchronisation.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use order_service::queue::{
    OutgoingMessage, Queue, QueueDepth, ReceivedMessage, TraceCarrier, MAX_BATCH,
};

/// Receives before a message is dead-lettered, on both implementations.
const MAX_RECEIVES: u32 = 2;
const NO_WAIT: Duration = Duration::ZERO;
const HOUR: Duration = Duration::from_secs(3600);
/// Bounds every wait; only a very slow machine gets near it.
const DEADLINE: Duration = Duration::from_secs(20);

fn bodies<const N: usize>(names: [&str; N]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Receives until `n` messages arrived (SQS may hand out fewer than are ready per call).
async fn receive_n(queue: &dyn Queue, n: usize, visibility: Duration) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = vec![];
    while got.len() < n {
        assert!(Instant::now() < deadline, "received {} of {n}", got.len());
        got.extend(
            queue
                .receive(MAX_BATCH, Duration::from_secs(1), visibility)
                .await
                .expect("receive"),
        );
    }
    assert_eq!(got.len(), n, "received more than was sent");
    got
}

fn counts(depth: QueueDepth) -> (u64, u64, u64) {
    (depth.visible, depth.in_flight, depth.dead_letters)
}

/// Polls `depth` until it equals `expected` (SQS's counts are approximate and may lag).
async fn wait_for_depth(queue: &dyn Queue, expected: (u64, u64, u64)) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let depth = counts(queue.depth().await.expect("depth"));
        if depth == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "depth (visible, in flight, dead) is {depth:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sent_messages_are_received_once_then_deleted(queue: &dyn Queue) {
    queue.ping().await.expect("ping");
    queue
        .send_batch(&[])
        .await
        .expect("an empty batch is a no-op");
    queue.send_batch(&bodies(["a", "b"])).await.unwrap();
    let got = receive_n(queue, 2, HOUR).await;
    let received: BTreeSet<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(received, BTreeSet::from(["a", "b"]));
    assert!(got.iter().all(|m| m.receive_count == 1), "{got:?}");
    assert_ne!(got[0].message_id, got[1].message_id);
    assert_ne!(got[0].receipt_handle, got[1].receipt_handle);

    assert!(
        queue.receive(10, NO_WAIT, HOUR).await.unwrap().is_empty(),
        "in-flight messages are hidden"
    );
    wait_for_depth(queue, (0, 2, 0)).await;

    let handles: Vec<String> = got.into_iter().map(|m| m.receipt_handle).collect();
    queue.delete_batch(&handles).await.unwrap();
    queue
        .delete_batch(&[])
        .await
        .expect("an empty delete is a no-op");
    wait_for_depth(queue, (0, 0, 0)).await;
}

async fn a_batch_holds_ten_messages(queue: &dyn Queue) {
    let ten: Vec<String> = (0..10).map(|i| format!("order-{i}")).collect();
    queue.send_batch(&ten).await.unwrap();
    let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
    assert!(
        queue.send_batch(&eleven).await.is_err(),
        "11 messages in one batch"
    );

    let got = receive_n(queue, 10, HOUR).await;
    let received: BTreeSet<String> = got.iter().map(|m| m.body.clone()).collect();
    assert_eq!(received, ten.into_iter().collect::<BTreeSet<_>>());
    // Deleting more than one SQS batch's worth of handles at once works too.
    let mut handles: Vec<String> = got.into_iter().map(|m| m.receipt_handle).collect();
    queue.send_batch(&bodies(["late"])).await.unwrap();
    handles.extend(
        receive_n(queue, 1, HOUR)
            .await
            .into_iter()
            .map(|m| m.receipt_handle),
    );
    queue.delete_batch(&handles).await.unwrap();
    wait_for_depth(queue, (0, 0, 0)).await;
}

async fn receive_returns_at_most_max(queue: &dyn Queue) {
    let five: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    queue.send_batch(&five).await.unwrap();
    let two = queue
        .receive(2, Duration::from_secs(1), HOUR)
        .await
        .unwrap();
    assert!((1..=2).contains(&two.len()), "got {}", two.len());
    // Zero is raised to one, as SQS's minimum.
    let one = queue
        .receive(0, Duration::from_secs(1), HOUR)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let rest = receive_n(queue, 5 - two.len() - 1, HOUR).await;
    let all: BTreeSet<String> = two
        .into_iter()
        .chain(one)
        .chain(rest)
        .map(|m| m.body)
        .collect();
    assert_eq!(all, five.into_iter().collect::<BTreeSet<_>>());
}

async fn an_undeleted_message_is_redelivered_after_its_visibility_timeout(queue: &dyn Queue) {
    queue.send_batch(&bodies(["order"])).await.unwrap();
    let first = receive_n(queue, 1, Duration::from_secs(1)).await.remove(0);
    assert_eq!(first.receive_count, 1);

    // The long poll outlasts the one-second visibility, and ends when the message reappears.
    let second = queue
        .receive(1, Duration::from_secs(10), HOUR)
        .await
        .unwrap()
        .pop()
        .expect("the message came back within the long poll");
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.body, "order");
    assert_eq!(second.receive_count, 2);
    assert_ne!(second.receipt_handle, first.receipt_handle);

    // A worker that overran its timeout may still try to delete with its old handle: that is
    // not an error. (Whether it deletes is up to the backend: SQS may, the embedded queue won't.)
    queue
        .delete_batch(&[first.receipt_handle])
        .await
        .expect("a stale receipt handle is not an error");
    queue.delete_batch(&[second.receipt_handle]).await.unwrap();
    wait_for_depth(queue, (0, 0, 0)).await;
    assert!(queue.receive(1, NO_WAIT, HOUR).await.unwrap().is_empty());
}

async fn a_message_received_too_often_ends_in_the_dead_letter_queue(queue: &dyn Queue) {
    queue.send_batch(&bodies(["poison"])).await.unwrap();
    for expected in 1..=MAX_RECEIVES {
        // A zero visibility timeout makes each delivery visible again at once, as if the worker
        // had crashed.
        let got = receive_n(queue, 1, Duration::ZERO).await.remove(0);
        assert_eq!((got.body.as_str(), got.receive_count), ("poison", expected));
    }
    // Both backends move the message on the receive after its last allowed one, instead of
    // delivering it again.
    assert!(
        queue
            .receive(1, Duration::from_secs(1), Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "a message past its receive limit was delivered again"
    );
    wait_for_depth(queue, (0, 0, 1)).await;
}

async fn a_long_poll_returns_as_soon_as_a_message_is_sent(queue: &dyn Queue) {
    let started = Instant::now();
    let (received, sent) = tokio::join!(queue.receive(1, Duration::from_secs(20), HOUR), async {
        // Gives the poll a head start so it is most likely waiting when the message arrives;
        // the test is correct whichever comes first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        queue.send_batch(&bodies(["hello"])).await
    });
    sent.unwrap();
    let received = received.unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, "hello");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the poll waited {:?} for a message sent at once",
        started.elapsed()
    );
}

async fn an_empty_long_poll_waits_then_returns_nothing(queue: &dyn Queue) {
    let started = Instant::now();
    let got = queue
        .receive(10, Duration::from_secs(1), HOUR)
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "returned after {:?}",
        started.elapsed()
    );
}

async fn depth_counts_visible_and_in_flight_messages(queue: &dyn Queue) {
    wait_for_depth(queue, (0, 0, 0)).await;
    queue.send_batch(&bodies(["a", "b", "c"])).await.unwrap();
    wait_for_depth(queue, (3, 0, 0)).await;
    let got = queue
        .receive(1, Duration::from_secs(1), HOUR)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    wait_for_depth(queue, (2, 1, 0)).await;
    queue
        .delete_batch(&[got[0].receipt_handle.clone()])
        .await
        .unwrap();
    wait_for_depth(queue, (2, 0, 0)).await;
}

async fn extending_visibility_keeps_a_message_hidden(queue: &dyn Queue) {
    queue.send_batch(&bodies(["slow"])).await.unwrap();
    let got = receive_n(queue, 1, Duration::from_secs(1)).await.remove(0);
    queue
        .extend_visibility(&got.receipt_handle, HOUR)
        .await
        .unwrap();
    // Past the original one-second visibility: still hidden.
    assert!(queue
        .receive(1, Duration::from_secs(2), HOUR)
        .await
        .unwrap()
        .is_empty());
    wait_for_depth(queue, (0, 1, 0)).await;
    // And back at once when the visibility is cut to zero (a worker giving a message up).
    queue
        .extend_visibility(&got.receipt_handle, Duration::ZERO)
        .await
        .unwrap();
    let again = receive_n(queue, 1, HOUR).await.remove(0);
    assert_eq!((again.body.as_str(), again.receive_count), ("slow", 2));
}

/// The trace context travels beside the body (SQS message attributes; columns of the embedded
/// queue), one message with both fields, one with only `traceparent`, one with none, in one
/// batch and alone.
async fn a_messages_trace_context_travels_with_it(queue: &dyn Queue) {
    let traced = |body: &str, state: Option<&str>| OutgoingMessage {
        body: body.to_string(),
        trace: TraceCarrier {
            traceparent: Some(format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b{}-01",
                body.len()
            )),
            tracestate: state.map(str::to_string),
        },
    };
    queue
        .send_messages(&[traced("ab", Some("vendor=x")), traced("abc", None)])
        .await
        .unwrap();
    queue.send_batch(&bodies(["plain"])).await.unwrap();
    queue
        .send_messages(&[traced("alone", Some("k=v"))])
        .await
        .unwrap();
    let got = receive_n(queue, 4, HOUR).await;
    let trace_of = |body: &str| got.iter().find(|m| m.body == body).unwrap().trace.clone();
    assert_eq!(trace_of("ab"), traced("ab", Some("vendor=x")).trace);
    assert_eq!(trace_of("abc"), traced("abc", None).trace);
    assert_eq!(trace_of("plain"), TraceCarrier::default());
    assert_eq!(trace_of("alone"), traced("alone", Some("k=v")).trace);
}

/// Generates one `#[tokio::test]` per contract function for each implementation.
macro_rules! queue_contract {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $test() {
                    let (queue, _dir) = super::sqlite_queue();
                    super::$test(&queue).await;
                }
            )*
        }

        mod real {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(moto) = crate::support::moto::start() else { return };
                    let queue = super::sqs_queue(&moto, stringify!($test)).await;
                    super::$test(&queue).await;
                }
            )*
        }
    };
}

queue_contract!(
    sent_messages_are_received_once_then_deleted,
    a_batch_holds_ten_messages,
    receive_returns_at_most_max,
    an_undeleted_message_is_redelivered_after_its_visibility_timeout,
    a_message_received_too_often_ends_in_the_dead_letter_queue,
    a_long_poll_returns_as_soon_as_a_message_is_sent,
    an_empty_long_poll_waits_then_returns_nothing,
    depth_counts_visible_and_in_flight_messages,
    extending_visibility_keeps_a_message_hidden,
    a_messages_trace_context_travels_with_it,
);

fn sqlite_queue() -> (order_service::queue::sqlite::SqliteQueue, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a directory for the queue");
    let db = order_service::store::sqlite::SqliteDb::open(&dir.path().join("queue.sqlite3"))
        .expect("open SQLite");
    (
        order_service::queue::sqlite::SqliteQueue::new(db, MAX_RECEIVES),
        dir,
    )
}

async fn sqs_queue(
    moto: &crate::support::moto::Moto,
    name: &str,
) -> order_service::queue::sqs::SqsQueue {
    // SQS queue names allow letters, digits, '-' and '_' up to 80 characters.
    let name: String = name.chars().take(70).collect();
    let (url, _dlq) = moto.create_queue(&name, MAX_RECEIVES).await;
    order_service::queue::sqs::SqsQueue::with_endpoint(
        url,
        &moto.endpoint(),
        crate::support::moto::REGION,
    )
}
