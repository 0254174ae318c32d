//! Deleting the records below an offset (Kafka's DeleteRecords) on the partition's leader, and
//! the low watermark it waits for: where the logs of the leader and its in-sync followers start.

use super::replica::Role;
use super::{PartitionError, PartitionHost, Shard};
use oxbow_core::placement::owner_shard;
use oxbow_storage::DeleteRecordsError;
use std::collections::HashMap;
use std::time::Duration;

/// DeleteRecords' offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

impl Shard {
    /// Moves the log start of a partition this node leads up to `offset` ([`HIGH_WATERMARK`]:
    /// everything readable), checkpointed, and waits until every in-sync follower moved its
    /// own there too (they take it from the leader's answers to their fetches), at most
    /// `timeout` (then REQUEST_TIMED_OUT, as Kafka's DeleteRecords); answers the low
    /// watermark, where all those logs start.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        timeout: Duration,
    ) -> Result<u64, PartitionError> {
        if oxbow_cluster::is_internal_topic(topic) {
            return Err(PartitionError::InternalTopic);
        }
        let owner = owner_shard(topic, partition, self.shards());
        let topic = topic.to_string();
        let asked = self.run_on(owner, move |owner| async move {
            let host = owner.leading(&topic, partition)?;
            let offset = match offset {
                HIGH_WATERMARK => host.log.log_end_offset(),
                offset => u64::try_from(offset).map_err(|_| PartitionError::OffsetOutOfRange)?,
            };
            let start = host.log.delete_records(offset).await.map_err(|e| match e {
                DeleteRecordsError::OffsetOutOfRange { .. } => PartitionError::OffsetOutOfRange,
                e => PartitionError::Storage(e.to_string()),
            })?;
            owner.wait_for_low_watermark(&host, start, timeout).await
        });
        asked.await.unwrap_or_else(|| {
            Err(PartitionError::Storage(
                "the owner shard is gone".to_string(),
            ))
        })
    }

    /// Waits until the low watermark of a partition this node leads (where its logs start on
    /// it and on every in-sync follower) reaches `offset`, at most `timeout`; answers the low
    /// watermark. Deleted records then stay deleted whichever in-sync replica leads next.
    async fn wait_for_low_watermark(
        &self,
        host: &PartitionHost,
        offset: u64,
        timeout: Duration,
    ) -> Result<u64, PartitionError> {
        let waiting = {
            let mut role = host.role.borrow_mut();
            let leading = match &mut *role {
                Role::Leader(leading) => leading,
                Role::Alone => return Ok(host.log.log_start_offset()),
                // Leadership moved while the start was checkpointed: the new leader may not
                // have deleted anything.
                Role::Follower(_) | Role::Offline => {
                    return Err(PartitionError::NotLeader { leader: -1 })
                }
            };
            let (me, own_start) = (self.config.node_id, host.log.log_start_offset());
            let waits = &mut leading.start_waits;
            let low = waits.low_watermark(leading.progress.isr(), me, own_start);
            if low >= offset {
                return Ok(low);
            }
            let (tx, rx) = flume::bounded(1);
            waits.waiters.push((offset, tx));
            rx
        };
        let reached = async {
            // Dropped unanswered: leadership moved before the followers caught up.
            (waiting.recv_async().await).map_err(|_| PartitionError::NotLeader { leader: -1 })
        };
        futures_lite::future::or(reached, async {
            glommio::timer::sleep(timeout).await;
            Err(PartitionError::TimedOut)
        })
        .await
    }
}

/// A leader's deletions of records waiting for its in-sync followers' logs to start at their
/// offset, and where each follower's log starts, as its last fetch said.
#[derive(Default)]
pub(super) struct StartWaits {
    follower_starts: HashMap<i32, u64>,
    /// Each is sent the low watermark once it reaches the offset.
    waiters: Vec<(u64, flume::Sender<u64>)>,
}

impl StartWaits {
    /// Kafka's low watermark: where the logs of this leader (starting at `own_start`) and of
    /// every in-sync follower all start. A follower not heard from since this node leads
    /// counts as starting at 0.
    fn low_watermark(&self, isr: &[i32], me: i32, own_start: u64) -> u64 {
        (isr.iter())
            .filter(|&&replica| replica != me)
            .map(|replica| self.follower_starts.get(replica).copied().unwrap_or(0))
            .fold(own_start, u64::min)
    }

    /// Follower `replica`'s log starts at `start` (its fetch said so): deletions waiting for
    /// the low watermark are answered once it passes them.
    pub(super) fn follower_started(
        &mut self,
        replica: i32,
        start: u64,
        isr: &[i32],
        me: i32,
        own_start: u64,
    ) {
        self.follower_starts.insert(replica, start);
        self.low_watermark_moved(isr, me, own_start);
    }

    /// Answers the deletions the low watermark passed (a follower's start moved, or the ISR
    /// changed).
    pub(super) fn low_watermark_moved(&mut self, isr: &[i32], me: i32, own_start: u64) {
        let low = self.low_watermark(isr, me, own_start);
        self.waiters.retain(|(offset, waiter)| {
            if *offset <= low {
                let _ = waiter.send(low);
                return false;
            }
            !waiter.is_disconnected()
        });
    }
}
