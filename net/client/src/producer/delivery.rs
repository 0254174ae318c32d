//! Getting one batch appended: its first attempt, then the attempts after a refusal or a lost
//! answer, until it is appended, a refusal no retry can change comes, or the delivery timeout
//! passes.
//!
//! Without idempotence only a `NotLeader` refusal is retried (nothing was appended, so nothing
//! can be duplicated). With it (Kafka's idempotent producer) every batch carries the producer
//! id, its epoch and the sequence of its first message on the partition. The partition
//! remembers the last [`PRODUCER_BATCHES_KEPT`] batches of each producer and answers a batch
//! it already holds with the offsets it got then, so a batch whose answer was lost (the
//! connection dropped, the broker restarted, the answer timed out) can safely go again. A
//! partition never has more than that many batches of this producer unanswered, so a batch
//! sent again is always among those remembered.

use super::Inner;
use crate::error::ClientError;
use crate::routing::is_not_leader;
use oxbow_core::native::{Acks, ClientFrame, ErrorCode, ServerFrame};
use oxbow_core::{BatchBuilder, PRODUCER_BATCHES_KEPT};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// The identity an idempotent producer's batches carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProducerIdentity {
    pub(super) id: i64,
    pub(super) epoch: i16,
}

/// One partition's share of an idempotent producer: the sequence of its next message, held
/// while a batch is stamped and sent so that sequences reach the broker in order, and the
/// permits of its unanswered batches.
pub(super) struct Lane {
    next_sequence: tokio::sync::Mutex<i32>,
    unanswered: Arc<Semaphore>,
}

impl Lane {
    pub(super) fn new() -> Lane {
        Lane {
            next_sequence: tokio::sync::Mutex::new(0),
            unanswered: Arc::new(Semaphore::new(PRODUCER_BATCHES_KEPT)),
        }
    }
}

/// A produce on its way: the connection, its request id and where its answer arrives.
type Sent = (
    Arc<crate::connection::Shared>,
    u64,
    oneshot::Receiver<Result<ServerFrame, ClientError>>,
);

/// What resolves the messages of one batch: the base offset (`None` under acks = none).
pub(super) type Resolve = Box<dyn FnOnce(Result<Option<u64>, ClientError>) + Send>;

impl Inner {
    /// Sends a batch to its partition's leader before returning (so batches leave in the order
    /// they are dispatched) and resolves its messages once it is answered, retrying apart.
    /// `permit` is the batch's in-flight slot, given back once it is answered; the delivery
    /// timeout counts from `opened`, when the batch took its first message.
    pub(super) async fn deliver(
        self: Arc<Self>,
        partition: u32,
        builder: BatchBuilder,
        opened: Instant,
        resolve: Resolve,
        permit: OwnedSemaphorePermit,
    ) {
        let deadline = opened + self.delivery_timeout;
        let (records, stamped, first) = match &self.identity {
            Some(identity) => {
                let lane = &self.lanes[partition as usize];
                let Ok(lane_permit) = lane.unanswered.clone().acquire_owned().await else {
                    return;
                };
                // Stamped and sent under the lock: sequences leave in the order they are given.
                let mut next_sequence = lane.next_sequence.lock().await;
                let stamp = *identity.lock().expect("not poisoned");
                let count = builder.len() as i64;
                let records = builder
                    .producer(stamp.id, stamp.epoch, *next_sequence)
                    .build();
                *next_sequence = ((*next_sequence as i64 + count) % (i32::MAX as i64 + 1)) as i32;
                let first = self.send_produce(partition, records.bytes()).await;
                drop(next_sequence);
                (records, Some((stamp, lane_permit)), first)
            }
            None => {
                let records = builder.build();
                let first = self.send_produce(partition, records.bytes()).await;
                (records, None, first)
            }
        };
        if self.acks == Acks::None {
            drop(permit);
            resolve(first.map(|_| None));
            return;
        }
        tokio::spawn(async move {
            let result = self
                .answer_of(partition, records.bytes(), first, deadline)
                .await;
            drop(permit);
            if let (Err(_), Some((stamp, lane_permit))) = (&result, stamped) {
                drop(lane_permit);
                self.start_over(stamp).await;
            }
            resolve(result.map(Some));
        });
    }

    /// After a batch stamped `failed` is given up, its partition's sequences have a gap for
    /// which the broker would refuse every later batch (`OutOfOrderSequence`): later batches
    /// go under a new producer id, every partition's sequences from 0, as Kafka's idempotent
    /// producer does after an unresolved sequence. Batches already sent under the old id end
    /// as they will. Done once per failed id; a failure to get a new one is retried at the
    /// next batch given up.
    async fn start_over(&self, failed: ProducerIdentity) {
        let Some(identity) = &self.identity else {
            return;
        };
        // Every lane's lock, in order (the only place that holds more than one).
        let mut sequences = Vec::with_capacity(self.lanes.len());
        for lane in &self.lanes {
            sequences.push(lane.next_sequence.lock().await);
        }
        if *identity.lock().expect("not poisoned") != failed {
            return;
        }
        match new_identity(&self.router).await {
            Ok(fresh) => {
                tracing::info!(topic = %self.topic, old = failed.id, new = fresh.id,
                    "a batch was given up: producing under a new producer id");
                *identity.lock().expect("not poisoned") = fresh;
                for sequence in &mut sequences {
                    **sequence = 0;
                }
            }
            Err(e) => tracing::warn!(topic = %self.topic, error = %e,
                "no new producer id after a batch was given up; trying at the next"),
        }
    }

    /// Waits for the answer to a sent batch, sending it again while that may help.
    async fn answer_of(
        &self,
        partition: u32,
        records: &[u8],
        mut attempt: Result<Option<Sent>, ClientError>,
        deadline: Instant,
    ) -> Result<u64, ClientError> {
        let mut not_leader_retries = self.router.not_leader_retries();
        let mut backoff = self.router.backoff();
        loop {
            let answer = match attempt {
                Ok(Some((shared, request_id, answer))) => shared.wait(request_id, answer).await,
                Ok(None) => unreachable!("only acks = None sends without an answer"),
                Err(e) => Err(e),
            };
            let error = match answer {
                Ok(ServerFrame::Produced { base_offset, .. }) => return Ok(base_offset),
                Ok(other) => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected answer {other:?}"
                    )))
                }
                Err(e) => e,
            };
            let idempotent = self.identity.is_some();
            let retry = match &error {
                e if is_not_leader(e) && !idempotent && not_leader_retries > 0 => {
                    not_leader_retries -= 1;
                    true
                }
                e if idempotent => worth_sending_again(e),
                _ => false,
            };
            // An earlier batch of this partition is on its way again: no need to back off.
            let wait = match error.code() {
                Some(ErrorCode::OutOfOrderSequence) => self.router.settings().retry_backoff,
                _ => backoff.next_wait(),
            };
            if !retry || Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(topic = %self.topic, partition, %error, ?wait, "sending a batch again");
            if !matches!(error.code(), Some(ErrorCode::OutOfOrderSequence)) {
                self.router.forget(&self.topic);
            }
            tokio::time::sleep(wait).await;
            attempt = self.send_produce(partition, records).await;
        }
    }

    /// Sends a batch to the partition's leader; `None` under acks = none (no answer comes).
    pub(super) async fn send_produce(
        &self,
        partition: u32,
        records: &[u8],
    ) -> Result<Option<Sent>, ClientError> {
        let shared = self.router.leader_of(&self.topic, partition).await?;
        let request_id = shared.next_id();
        let frame = ClientFrame::Produce {
            request_id,
            topic: self.topic.clone(),
            partition,
            acks: self.acks,
        };
        if self.acks == Acks::None {
            return shared.send(&frame, records).map(|()| None);
        }
        let answer = shared.register(request_id);
        if let Err(e) = shared.send(&frame, records) {
            shared.forget_waiter(request_id);
            return Err(e);
        }
        Ok(Some((shared, request_id, answer)))
    }
}

/// Whether an idempotent producer's batch may be appended by sending it again: the broker was
/// away or is restarting, leadership moved, the answer did not come, or an earlier batch has
/// not arrived yet. A refusal of the batch itself (too large, not authorized, fenced, unknown
/// topic) will not change.
fn worth_sending_again(error: &ClientError) -> bool {
    match error {
        ClientError::Io(_) | ClientError::Closed | ClientError::Timeout(_) => true,
        ClientError::Refused { code, .. } => matches!(
            code,
            ErrorCode::NotLeader
                | ErrorCode::OutOfOrderSequence
                | ErrorCode::LimitReached
                | ErrorCode::TimedOut
        ),
        _ => false,
    }
}

/// Asks a broker for a producer id.
pub(super) async fn new_identity(
    router: &crate::routing::Router,
) -> Result<ProducerIdentity, ClientError> {
    let shared = router.any().await?;
    let request_id = shared.next_id();
    let frame = ClientFrame::InitProducer { request_id };
    match shared.request(request_id, &frame, &[]).await? {
        ServerFrame::ProducerId {
            producer_id, epoch, ..
        } if producer_id >= 0 => Ok(ProducerIdentity {
            id: producer_id,
            epoch,
        }),
        other => Err(ClientError::Protocol(format!(
            "unexpected answer to InitProducer: {other:?}"
        ))),
    }
}
