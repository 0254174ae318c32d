//! A partition leader's answers to its followers: where a follower's epoch ends on this log,
//! and a fetch's batches (held until there is something to send, throttled for followers
//! outside the ISR) with the subscription cursors when the follower holds another generation.

use super::replica::{high_watermark_moved, now_ms, Role};
use super::{PartitionHost, Shard};
use bytes::{BufMut, BytesMut};
use oxbow_cluster::replication::{check_request, CursorSnapshot, ReplicaFrame};
use oxbow_core::RecordBatch;
use std::time::Duration;

impl Shard {
    /// The leader's answer to a follower's request.
    pub(super) async fn lead(
        &self,
        host: &PartitionHost,
        frame: ReplicaFrame,
    ) -> Option<ReplicaFrame> {
        let key = *frame.key();
        let leading = match &*host.role.borrow() {
            Role::Leader(leading) => Some(leading.progress.epoch()),
            _ => None,
        };
        let (start, end) = (host.log.log_start_offset(), host.log.durable_end_offset());
        let fetch_offset = match &frame {
            ReplicaFrame::Fetch { offset, .. } => Some(*offset),
            _ => None,
        };
        let from = match check_request(&key, leading, fetch_offset, start, end) {
            Ok(from) => from,
            Err(refusal) => return Some(ReplicaFrame::Refused { key, refusal }),
        };
        match frame {
            ReplicaFrame::EpochQuery { latest_epoch, .. } => Some(ReplicaFrame::EpochAnswer {
                key,
                answer: latest_epoch.and_then(|e| host.log.end_offset_for_epoch(e)),
            }),
            ReplicaFrame::Fetch {
                replica,
                durable_end,
                log_start,
                cursors,
                ..
            } => {
                {
                    let mut role = host.role.borrow_mut();
                    let Role::Leader(leading) = &mut *role else {
                        return None;
                    };
                    match leading
                        .progress
                        .follower_fetched(replica, durable_end, now_ms())
                    {
                        Ok(Some(hw)) => high_watermark_moved(host, leading, hw),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(topic = %host.topic, error = %e, "fetch refused");
                            return None;
                        }
                    }
                    let (me, own_start) = (self.config.node_id, host.log.log_start_offset());
                    let isr = leading.progress.isr();
                    (leading.start_waits).follower_started(replica, log_start, isr, me, own_start);
                }
                let subscriptions = &host.subscriptions;
                subscriptions.cursors_held(replica, cursors);
                // Caught up: hold the fetch until there is something to send.
                if from >= host.log.durable_end_offset()
                    && cursors == subscriptions.cursor_generation()
                {
                    let wait = self.config.cluster.replica_fetch_wait_max_ms;
                    // Deleted records wake it too: the follower learns the start from the answer.
                    let news = futures_lite::future::or(
                        futures_lite::future::or(
                            host.log.wait_for_durable(from),
                            host.log.wait_for_start_past(start),
                        ),
                        subscriptions.cursors_moved_from(cursors),
                    );
                    futures_lite::future::or(news, async {
                        glommio::timer::sleep(Duration::from_millis(wait)).await;
                    })
                    .await;
                }
                // A follower outside the ISR catches up within its bandwidth.
                let throttled = match &mut *host.role.borrow_mut() {
                    Role::Leader(leading) if !leading.progress.isr().contains(&replica) => {
                        (leading.catch_up.as_mut()).map(|t| t.wait_ms(now_ms()))
                    }
                    _ => None,
                };
                if let Some(wait) = throttled.filter(|&ms| ms > 0) {
                    let most = self.config.cluster.replica_fetch_wait_max_ms;
                    glommio::timer::sleep(Duration::from_millis(wait.min(most))).await;
                }
                let cursors = self.cursors_for(host, cursors).await;
                // The cursors take their room from the batches'.
                let most = (self.config.cluster.replica_fetch_bytes_max as usize)
                    .saturating_sub(cursors.as_ref().map_or(0, CursorSnapshot::encoded_len));
                let batches = match most {
                    0 => Vec::new(),
                    most => match host.log.read_for_followers(from, most).await {
                        Ok(batches) => batches,
                        Err(e) => {
                            tracing::warn!(topic = %host.topic, error = %e, "reading for a follower");
                            return None;
                        }
                    },
                };
                let offset = batches.first().map_or(from, RecordBatch::base_offset);
                let mut bytes = BytesMut::new();
                for batch in &batches {
                    bytes.put_slice(batch.bytes());
                }
                let high_watermark = match &mut *host.role.borrow_mut() {
                    Role::Leader(leading) => {
                        if let (Some(_), Some(throttle)) = (throttled, &mut leading.catch_up) {
                            throttle.spent(bytes.len(), now_ms());
                        }
                        leading.progress.high_watermark()
                    }
                    _ => return None,
                };
                Some(ReplicaFrame::Data {
                    key,
                    offset,
                    high_watermark,
                    log_start: host.log.log_start_offset(),
                    cursors,
                    batches: bytes.freeze(),
                })
            }
            _ => None,
        }
    }

    /// The cursors for a follower that holds generation `held`: `None` when that is this
    /// node's, or when they cannot be sent (the follower keeps asking; the writes waiting for
    /// it time out).
    async fn cursors_for(&self, host: &PartitionHost, held: u64) -> Option<CursorSnapshot> {
        if held == host.subscriptions.cursor_generation() {
            return None;
        }
        let snapshot = match host.subscriptions.cursor_snapshot().await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(topic = %host.topic, partition = host.partition, error = %e,
                    "reading cursors for a follower");
                return None;
            }
        };
        let room = (self.config.cluster.frame_bytes_max as usize).saturating_sub(1 << 10);
        if snapshot.encoded_len() > room {
            tracing::error!(topic = %host.topic, partition = host.partition,
                bytes = snapshot.encoded_len(),
                "subscription cursors exceed cluster.frame_bytes_max: not replicated");
            return None;
        }
        Some(snapshot)
    }
}
