//! A consumer's connections (the leader of each of its partitions) and the acknowledgements
//! sent through them, from any thread.

use crate::connection::Shared;
use crate::error::ClientError;
use crate::message::Message;
use oxbow_core::native::{ClientFrame, SubscriptionType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
        let shared = self.by_partition.get(&partition).ok_or_else(|| {
            ClientError::Config(format!(
                "the consumer is not attached on partition {partition}"
            ))
        })?;
        shared.send(frame, &[])
    }

    /// Sends a frame to every leader.
    pub(crate) fn send_each(&self, frame: &ClientFrame) -> Result<(), ClientError> {
        (self.connections.iter()).try_for_each(|shared| shared.send(frame, &[]))
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

/// Acknowledges a consumer's messages from any thread (a handle on its connections). While
/// a reconnecting consumer has lost a leader, acknowledgements for that leader's partitions
/// are dropped and succeed: the broker delivers those messages again (at least once).
#[derive(Clone)]
pub struct Acker {
    pub(crate) attachment: Arc<Attachment>,
    pub(crate) kind: SubscriptionType,
}

impl Acker {
    /// Acknowledges one message.
    pub fn ack<K, V>(&self, message: &Message<K, V>) -> Result<(), ClientError> {
        self.ack_offsets(message.partition, vec![message.offset])
    }

    /// Acknowledges many messages, one frame per partition.
    pub fn ack_all<K, V>(&self, messages: &[Message<K, V>]) -> Result<(), ClientError> {
        let mut by_partition: HashMap<u32, Vec<u64>> = HashMap::new();
        for message in messages {
            by_partition
                .entry(message.partition)
                .or_default()
                .push(message.offset);
        }
        for (partition, offsets) in by_partition {
            self.ack_offsets(partition, offsets)?;
        }
        Ok(())
    }

    fn ack_offsets(&self, partition: u32, offsets: Vec<u64>) -> Result<(), ClientError> {
        self.attachment
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
        self.attachment
            .send(partition, |consumer_id| ClientFrame::AckCumulative {
                consumer_id,
                partition,
                offset,
            })
    }

    /// Asks for the message again after `delay`.
    pub fn nack<K, V>(&self, message: &Message<K, V>, delay: Duration) -> Result<(), ClientError> {
        let partition = message.partition;
        self.attachment
            .send(partition, |consumer_id| ClientFrame::Nack {
                consumer_id,
                partition,
                offsets: vec![message.offset],
                delay_ms: delay.as_millis() as u64,
            })
    }
}
