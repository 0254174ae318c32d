//! The native producer while the broker cannot answer (stopped with SIGSTOP): with its one
//! in-flight slot out, sends keep returning and the messages gather in the partition's open
//! batch, to leave together once the slot frees, as librdkafka's accumulator does; a send that
//! does not fit the full open batch waits. Once the broker runs again every message is
//! answered, in order.

mod common;

use common::{runtime, start_native_broker, Broker};
use oxbow_client::Client;
use std::time::Duration;

/// Bound on waits that must end.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long a send may take before it counts as waiting on the stopped broker (a send that
/// gathers returns at once).
const WAITING: Duration = Duration::from_secs(2);
const BATCH_BYTES: usize = 4096;
const VALUE_BYTES: usize = 100;

fn signal(broker: &Broker, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(broker.child.id() as i32, signal) }, 0);
}

fn value(i: usize) -> Vec<u8> {
    format!("{i:0VALUE_BYTES$}").into_bytes()
}

#[test]
fn sends_gather_in_the_open_batch_while_every_slot_is_out() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start_native_broker(dir.path(), "");
    runtime().block_on(async {
        let client = Client::builder().broker(&addr).connect().await.unwrap();
        client.create_topic("gather", 1).await.unwrap();
        let producer = client
            .producer("gather")
            .linger(Duration::ZERO)
            .in_flight_batches_max(1)
            .batch_bytes_max(BATCH_BYTES)
            .build()
            .await
            .unwrap();
        signal(&broker, libc::SIGSTOP);
        let mut pending = Vec::new();
        let blocked = loop {
            let i = pending.len();
            assert!(i < 10 * BATCH_BYTES / VALUE_BYTES, "sends never waited");
            let value = value(i);
            match tokio::time::timeout(WAITING, producer.send(None, &value)).await {
                Ok(sent) => pending.push(sent.unwrap()),
                Err(_) => break i,
            }
        };
        // The first batch took the slot; the second gathered until full.
        let per_batch = BATCH_BYTES / VALUE_BYTES;
        assert!(
            blocked > per_batch / 2 && blocked <= 2 * per_batch,
            "{blocked} sends returned with the broker stopped, batches hold about {per_batch}"
        );
        signal(&broker, libc::SIGCONT);
        let last = tokio::time::timeout(PATIENCE, producer.send(None, &value(blocked)))
            .await
            .expect("the waiting send went on once the broker answered")
            .unwrap();
        pending.push(last);
        for (i, sent) in pending.into_iter().enumerate() {
            let delivered = tokio::time::timeout(PATIENCE, sent).await.unwrap().unwrap();
            assert_eq!(delivered.offset, Some(i as u64), "message {i}");
        }
    });
}
