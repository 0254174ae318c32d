//! Ending a transaction on its partitions: a marker (control batch) appended to each with
//! acks=all, retried until it is in or the partition is gone, then the "complete" record.
//! Markers are written by the coordinator epoch's owner only: when the transaction log moves
//! (a new leader epoch), the new coordinator resumes what is unfinished.

use super::log::TxnLog;
use crate::shard::{Acks, PartitionError, Shard};
use oxbow_cluster::transactions::MarkerJob;
use oxbow_cluster::{OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
use oxbow_core::{MarkerKind, TxnMarker};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How long a marker write waits for its partition's in-sync replicas before it is retried.
const MARKER_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between rounds of retries.
const MARKER_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Starts writing `job`'s markers in the background, unless they are being written already.
pub(super) fn start(shard: Rc<Shard>, txn: Rc<TxnLog>, job: MarkerJob) {
    if !txn
        .writing
        .borrow_mut()
        .insert(job.transactional_id.clone())
    {
        return;
    }
    glommio::spawn_local(async move {
        let id = job.transactional_id.clone();
        write(&shard, &txn, job).await;
        txn.writing.borrow_mut().remove(&id);
    })
    .detach();
}

/// Whether this shard no longer coordinates the log's partition at the epoch it loaded.
fn superseded(shard: &Shard, txn: &TxnLog) -> bool {
    let epoch = (shard.metadata().topic(TRANSACTION_STATE_TOPIC))
        .and_then(|t| t.partitions.get(txn.partition as usize))
        .map(|p| p.leader_epoch);
    shard
        .leading(TRANSACTION_STATE_TOPIC, txn.partition)
        .is_err()
        || epoch != Some(txn.epoch)
}

async fn write(shard: &Rc<Shard>, txn: &Rc<TxnLog>, job: MarkerJob) {
    let marker = TxnMarker {
        kind: match job.commit {
            true => MarkerKind::Commit,
            false => MarkerKind::Abort,
        },
        coordinator_epoch: txn.epoch,
    };
    let mut left: Vec<(String, u32)> = job.partitions.clone();
    let mut warned = false;
    while !left.is_empty() {
        let mut failed = Vec::new();
        if superseded(shard, txn) {
            return;
        }
        let mut started = Vec::with_capacity(left.len());
        for (topic, partition) in left.drain(..) {
            if topic == OFFSETS_TOPIC {
                // Offsets committed in the transaction wait in the group's partition: the
                // group coordinator makes them committed, or drops them.
                let producer = (job.producer_id, job.producer_epoch);
                let ended =
                    crate::kafka::groups::end_transaction(shard, partition, producer, job.commit)
                        .await;
                if let Err(error) = ended {
                    tracing::warn!(transactional_id = %job.transactional_id, partition,
                        error = %error, "ending transactional offsets; retrying");
                    failed.push((topic, partition));
                }
                continue;
            }
            let batch = marker.batch(job.producer_id, job.producer_epoch, oxbow_storage::now_ms());
            let topic_arc: Arc<str> = Arc::from(topic.as_str());
            let outcome = shard
                .send_produce_within(
                    topic_arc,
                    partition,
                    vec![batch],
                    Acks::All,
                    Some(MARKER_WRITE_TIMEOUT),
                )
                .await;
            started.push(((topic, partition), outcome));
        }
        for ((topic, partition), outcome) in started {
            match outcome.recv_async().await {
                Ok(Ok(_)) => {}
                // A partition deleted meanwhile has nothing left to end (as in Kafka); one this
                // shard does not know yet (being created or moved) is retried.
                Ok(Err(PartitionError::UnknownTopicOrPartition))
                    if shard.partition_count(&topic).is_none_or(|n| partition >= n) => {}
                // A newer epoch holds the partition (as Kafka, the marker is given up).
                Ok(Err(PartitionError::ProducerFenced)) => {
                    tracing::warn!(transactional_id = %job.transactional_id, topic = %topic,
                        partition, "a transaction marker was fenced by a newer epoch");
                }
                failed => {
                    if !warned {
                        warned = true;
                        let error = failed.map_or("owner shard gone".to_string(), |o| {
                            o.err().map(|e| e.to_string()).unwrap_or_default()
                        });
                        tracing::warn!(transactional_id = %job.transactional_id, topic = %topic,
                            partition, error = %error, "writing a transaction marker; retrying");
                    }
                    left.push((topic, partition));
                }
            }
        }
        left.extend(failed);
        if !left.is_empty() {
            glommio::timer::sleep(MARKER_RETRY_BACKOFF).await;
        }
    }
    let now = oxbow_storage::now_ms();
    let complete = txn
        .core
        .borrow_mut()
        .markers_written(&job.transactional_id, now);
    if let Some((id, metadata)) = complete {
        let stored = txn.store(shard, &id, Some(&metadata)).await;
        txn.core.borrow_mut().persisted(&id, stored.is_ok());
        if stored.is_err() {
            // Still "prepared": the next check of unfinished endings writes the markers again.
            tracing::warn!(transactional_id = %id, "storing a completed transaction failed");
        }
    }
}
