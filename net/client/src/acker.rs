//! A consumer's connections (the leader of each of its partitions) and the acknowledgements
//! sent through them, from any thread.

use crate::connection::Shared;
use crate::error::ClientError;
use crate::message::Message;
use oxbow_core::native::{ClientFrame, ServerFrame, SubscriptionType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// One attachment of a consumer: the id it is known by on its connections, and those
/// connections. A consumer that reconnects is attached again, under a new id.
pub(crate) struct Attached {
    pub(crate) legs: Legs,
    pub(crate) consumer_id: u64,
}

/// A consumer's current attachment, shared with its ackers so that they follow it when the
/// consumer reconnects.
pub(crate) struct Attachment {
    current: Mutex<Arc<Attached>>,
    /// Whether the consumer reconnects: then an acknowledgement that finds its connection
    /// gone is dropped (the message comes again) instead of failing.
    reconnects: bool,
}

impl Attachment {
    pub(crate) fn new(attached: Attached, reconnects: bool) -> Attachment {
        Attachment {
            current: Mutex::new(Arc::new(attached)),
            reconnects,
        }
    }

    pub(crate) fn current(&self) -> Arc<Attached> {
        self.current.lock().expect("not poisoned").clone()
    }

    pub(crate) fn replace(&self, attached: Attached) {
        *self.current.lock().expect("not poisoned") = Arc::new(attached);
    }

    /// Sends an acknowledgement frame built for the current attachment to `partition`'s
    /// leader.
    fn send(
        &self,
        partition: u32,
        frame: impl FnOnce(u64) -> ClientFrame,
    ) -> Result<(), ClientError> {
        let attached = self.current();
        match attached.legs.send(partition, &frame(attached.consumer_id)) {
            Err(ClientError::Closed) if self.reconnects => Ok(()),
            result => result,
        }
    }
}

/// The connections a consumer is attached through: the leader of each of its partitions.
#[derive(Default)]
pub(crate) struct Legs {
    by_partition: HashMap<u32, Arc<Shared>>,
    connections: Vec<Arc<Shared>>,
}

impl Legs {
    pub(crate) fn add(&mut self, shared: Arc<Shared>, partitions: &[u32]) {
        for &partition in partitions {
            self.by_partition.insert(partition, shared.clone());
        }
        self.connections.push(shared);
    }

    /// Sends a frame to the leader of `partition`.
    pub(crate) fn send(&self, partition: u32, frame: &ClientFrame) -> Result<(), ClientError> {
        self.leader_of(partition)?.send(frame, &[])
    }

    /// The connection to `partition`'s leader.
    fn leader_of(&self, partition: u32) -> Result<&Arc<Shared>, ClientError> {
        self.by_partition.get(&partition).ok_or_else(|| {
            ClientError::Config(format!(
                "the consumer is not attached on partition {partition}"
            ))
        })
    }

    /// Sends a frame to every leader.
    pub(crate) fn send_each(&self, frame: &ClientFrame) -> Result<(), ClientError> {
        (self.connections.iter()).try_for_each(|shared| shared.send(frame, &[]))
    }

    /// Sends a request to the leader of `partition` and waits for its answer.
    pub(crate) async fn request(
        &self,
        partition: u32,
        build: impl FnOnce(u64) -> ClientFrame,
    ) -> Result<ServerFrame, ClientError> {
        let shared = self.leader_of(partition)?;
        let request_id = shared.next_id();
        shared.request(request_id, &build(request_id), &[]).await
    }

    /// Sends a request to every leader; the first failure is the answer.
    pub(crate) async fn request_each(
        &self,
        build: impl Fn(u64) -> ClientFrame,
    ) -> Result<(), ClientError> {
        let mut outcome = Ok(());
        for shared in &self.connections {
            let request_id = shared.next_id();
            let answer = shared.request(request_id, &build(request_id), &[]).await;
            if let (Err(e), Ok(())) = (answer, &outcome) {
                outcome = Err(e);
            }
        }
        outcome
    }

    /// Detaches the consumer everywhere and stops routing its deliveries.
    pub(crate) async fn close(&self, consumer_id: u64) -> Result<(), ClientError> {
        let result = self
            .request_each(|request_id| ClientFrame::CloseConsumer {
                request_id,
                consumer_id,
            })
            .await;
        self.forget(consumer_id);
        result
    }

    pub(crate) fn forget(&self, consumer_id: u64) {
        for shared in &self.connections {
            shared.remove_consumer(consumer_id);
        }
    }
}

/// A topic and one of its partitions.
type TopicPartition = (Arc<str>, u32);

/// Acknowledges a consumer's messages from any thread (a handle on its connections). While
/// a reconnecting consumer has lost a leader, acknowledgements for that leader's partitions
/// are dropped and succeed: the broker delivers those messages again (at least once). A
/// consumer of several topics has one acker for all of them: each message goes to its own
/// topic's attachment.
#[derive(Clone)]
pub struct Acker {
    targets: Arc<RwLock<HashMap<Arc<str>, Arc<Attachment>>>>,
    kind: SubscriptionType,
    /// Per topic and partition, the offset after the last message a commit confirmed.
    committed: Arc<Mutex<HashMap<TopicPartition, u64>>>,
}

impl Acker {
    /// An acker of no topic yet.
    pub(crate) fn empty(kind: SubscriptionType) -> Acker {
        Acker {
            targets: Arc::default(),
            kind,
            committed: Arc::default(),
        }
    }

    /// An acker of one topic's attachment.
    pub(crate) fn new(
        topic: Arc<str>,
        attachment: Arc<Attachment>,
        kind: SubscriptionType,
    ) -> Acker {
        let acker = Acker::empty(kind);
        acker.add(topic, attachment);
        acker
    }

    /// Acknowledges the messages of `topic` through `attachment` too (a consumer of several
    /// topics that found another one).
    pub(crate) fn add(&self, topic: Arc<str>, attachment: Arc<Attachment>) {
        (self.targets.write().expect("not poisoned")).insert(topic, attachment);
    }

    /// Per partition of `topic`, the offset after the last message a commit confirmed.
    pub(crate) fn committed_positions(&self, topic: &str) -> HashMap<u32, u64> {
        let committed = self.committed.lock().expect("not poisoned");
        (committed.iter())
            .filter(|((t, _), _)| &**t == topic)
            .map(|((_, partition), position)| (*partition, *position))
            .collect()
    }

    fn attachment(&self, topic: &str) -> Result<Arc<Attachment>, ClientError> {
        let targets = self.targets.read().expect("not poisoned");
        targets.get(topic).cloned().ok_or_else(|| {
            ClientError::Config(format!(
                "a message of topic {topic}, which this consumer does not read"
            ))
        })
    }

    /// Acknowledges one message.
    pub fn ack<K, V>(&self, message: &Message<K, V>) -> Result<(), ClientError> {
        self.ack_offsets(&message.topic, message.partition, vec![message.offset])
    }

    /// Acknowledges many messages, one frame per topic and partition.
    pub fn ack_all<K, V>(&self, messages: &[Message<K, V>]) -> Result<(), ClientError> {
        for ((topic, partition), offsets) in by_partition(messages) {
            self.ack_offsets(topic, partition, offsets)?;
        }
        Ok(())
    }

    fn ack_offsets(
        &self,
        topic: &str,
        partition: u32,
        offsets: Vec<u64>,
    ) -> Result<(), ClientError> {
        self.attachment(topic)?
            .send(partition, |consumer_id| ClientFrame::Ack {
                consumer_id,
                partition,
                offsets,
            })
    }

    /// Acknowledges every message of the message's partition up to and including it.
    /// Exclusive and failover subscriptions only.
    pub fn ack_cumulative<K, V>(&self, message: &Message<K, V>) -> Result<(), ClientError> {
        if !matches!(
            self.kind,
            SubscriptionType::Exclusive | SubscriptionType::Failover
        ) {
            return Err(ClientError::Config(
                "cumulative acknowledgement needs an exclusive or failover subscription".into(),
            ));
        }
        let (partition, offset) = (message.partition, message.offset);
        self.attachment(&message.topic)?
            .send(partition, |consumer_id| ClientFrame::AckCumulative {
                consumer_id,
                partition,
                offset,
            })
    }

    /// Asks for the message again after `delay`.
    pub fn nack<K, V>(&self, message: &Message<K, V>, delay: Duration) -> Result<(), ClientError> {
        let partition = message.partition;
        self.attachment(&message.topic)?
            .send(partition, |consumer_id| ClientFrame::Nack {
                consumer_id,
                partition,
                offsets: vec![message.offset],
                delay_ms: delay.as_millis() as u64,
            })
    }

    /// Acknowledges the message and resolves once the broker holds the acknowledgement
    /// durably: the subscription's cursor written and synced on the partition's leader and
    /// held by its in-sync replicas. A message committed is never delivered again, even after
    /// kill -9 of the broker. Fails with [`ClientError::Closed`] or [`ClientError::Io`] when
    /// the leader's connection is lost before the answer (the commit may or may not have
    /// happened: the message may come again), and with a `CommitFailed` refusal when the
    /// message is no longer this consumer's to acknowledge (redelivered elsewhere after its
    /// ack timeout, or the subscription is not reliable). Costs one round trip and one
    /// cursor write each: commit a batch with [`commit_all`](Self::commit_all), or
    /// cumulatively.
    pub async fn commit<K, V>(&self, message: &Message<K, V>) -> Result<(), ClientError> {
        let offsets = vec![message.offset];
        self.commit_offsets(&message.topic, message.partition, offsets, false)
            .await
    }

    /// [`commit`](Self::commit) of many messages: one request per topic and partition.
    pub async fn commit_all<K, V>(&self, messages: &[Message<K, V>]) -> Result<(), ClientError> {
        for ((topic, partition), offsets) in by_partition(messages) {
            self.commit_offsets(topic, partition, offsets, false)
                .await?;
        }
        Ok(())
    }

    /// [`commit`](Self::commit) of every message of the message's partition up to and
    /// including it (exclusive and failover subscriptions).
    pub async fn commit_cumulative<K, V>(
        &self,
        message: &Message<K, V>,
    ) -> Result<(), ClientError> {
        let offsets = vec![message.offset];
        self.commit_offsets(&message.topic, message.partition, offsets, true)
            .await
    }

    async fn commit_offsets(
        &self,
        topic: &str,
        partition: u32,
        offsets: Vec<u64>,
        cumulative: bool,
    ) -> Result<(), ClientError> {
        let after = offsets.iter().max().map_or(0, |last| last + 1);
        let attached = self.attachment(topic)?.current();
        let consumer_id = attached.consumer_id;
        let answer = (attached.legs)
            .request(partition, |request_id| ClientFrame::Commit {
                request_id,
                consumer_id,
                partition,
                offsets,
                cumulative,
            })
            .await?;
        if !matches!(answer, ServerFrame::Done { .. }) {
            return Err(ClientError::Protocol(format!(
                "unexpected answer to Commit: {answer:?}"
            )));
        }
        let mut committed = self.committed.lock().expect("not poisoned");
        let position = committed.entry((Arc::from(topic), partition)).or_insert(0);
        *position = (*position).max(after);
        Ok(())
    }
}

/// The offsets of `messages` by topic and partition.
fn by_partition<K, V>(messages: &[Message<K, V>]) -> HashMap<(&str, u32), Vec<u64>> {
    let mut grouped: HashMap<(&str, u32), Vec<u64>> = HashMap::new();
    for message in messages {
        grouped
            .entry((&message.topic, message.partition))
            .or_default()
            .push(message.offset);
    }
    grouped
}
