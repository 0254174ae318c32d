//! A consumer: attaches to a subscription on every partition of a topic (through each
//! partition's leader), grants permits as the application takes messages, and acknowledges
//! them.

mod builder;

pub use builder::{ConsumerBuilder, DEFAULT_PATTERN_REFRESH};

use crate::acker::{Acker, Attachment};
use crate::connection::ConsumerEvent;
use crate::error::ClientError;
use crate::message::Message;
use crate::reattach::{reattach, Reattaching};
use crate::tiers::{within, BufferedStream, MessageStream};
use oxbow_core::native::{ClientFrame, StartPosition};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// A consumer grants permits back each time it has taken this fraction of its receiver queue.
const PERMIT_REFILL_FRACTION: u32 = 10;

/// A consumer attached to one subscription on every partition of a topic.
pub struct Consumer {
    attachment: Arc<Attachment>,
    /// Acknowledges through `attachment`; keeps what commits confirmed.
    acker: Acker,
    /// The current attachment's id: messages of an earlier one grant no permits.
    consumer_id: u64,
    /// Its settings: what to attach again after a lost connection.
    pub(crate) spec: ConsumerBuilder,
    /// Where a new attachment delivers.
    events_tx: mpsc::UnboundedSender<ConsumerEvent>,
    /// Attaching again, after a lost connection.
    reattaching: Option<Reattaching>,
    partitions: u32,
    events: mpsc::UnboundedReceiver<ConsumerEvent>,
    ready: VecDeque<Message>,
    taken: Vec<u32>,
    positions: HashMap<u32, u64>,
    ended: bool,
    /// A blocked partition's error that arrived behind messages, reported once they are taken.
    held_error: Option<ClientError>,
}

impl Consumer {
    /// Partition count of the topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// A handle that acknowledges this consumer's messages from anywhere.
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.spec.topic
    }

    /// Its attachment, for a consumer of several topics that acknowledges through it.
    pub(crate) fn attachment(&self) -> Arc<Attachment> {
        self.attachment.clone()
    }

    /// Acknowledges one message.
    pub fn ack<K, V>(&self, message: &Message<K, V>) -> Result<(), ClientError> {
        self.acker().ack(message)
    }

    /// Acknowledges many messages, one frame per partition.
    pub fn ack_all<K, V>(&self, messages: &[Message<K, V>]) -> Result<(), ClientError> {
        self.acker().ack_all(messages)
    }

    /// Acknowledges the message's partition up to and including it (exclusive and failover).
    pub fn ack_cumulative<K, V>(&self, message: &Message<K, V>) -> Result<(), ClientError> {
        self.acker().ack_cumulative(message)
    }

    /// Asks for the message again after `delay`.
    pub fn nack<K, V>(&self, message: &Message<K, V>, delay: Duration) -> Result<(), ClientError> {
        self.acker().nack(message, delay)
    }

    /// Acknowledges the message once the broker holds that durably ([`Acker::commit`]).
    pub async fn commit<K, V>(&self, message: &Message<K, V>) -> Result<(), ClientError> {
        self.acker.commit(message).await
    }

    /// Commits the message's partition up to and including it ([`Acker::commit_cumulative`]).
    pub async fn commit_cumulative<K, V>(
        &self,
        message: &Message<K, V>,
    ) -> Result<(), ClientError> {
        self.acker.commit_cumulative(message).await
    }

    /// Per partition, the offset after the last message this consumer received.
    pub fn current_positions(&self) -> HashMap<u32, u64> {
        self.positions.clone()
    }

    /// Per partition, the offset after the last message a commit of this consumer (or of
    /// its ackers) confirmed durable. Acknowledgements without commit are not counted: the
    /// broker stores them within `cursor_persist_interval_ms`, unconfirmed.
    pub fn committed_positions(&self) -> HashMap<u32, u64> {
        self.acker.committed_positions(&self.spec.topic)
    }

    /// Moves the subscription's cursor on every partition. Messages already on their way may
    /// still arrive (at-least-once allows it).
    pub async fn seek(&mut self, position: StartPosition) -> Result<(), ClientError> {
        let attached = self.attachment.current();
        let consumer_id = attached.consumer_id;
        attached
            .legs
            .request_each(|request_id| ClientFrame::Seek {
                request_id,
                consumer_id,
                position,
            })
            .await
    }

    /// Detaches; a reliable subscription keeps its cursor for the next consumer.
    pub async fn close(self) -> Result<(), ClientError> {
        let attached = self.attachment.current();
        attached.legs.close(attached.consumer_id).await
    }

    /// Detaches and deletes the subscription.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        let attached = self.attachment.current();
        let consumer_id = attached.consumer_id;
        let result = (attached.legs)
            .request_each(|request_id| ClientFrame::Unsubscribe {
                request_id,
                consumer_id,
            })
            .await;
        attached.legs.forget(consumer_id);
        result
    }

    /// The next message. [`ClientError::DeliveryBlocked`] is not the end of the consumer: a
    /// partition stopped in front of a batch the broker cannot decode, the others go on; any
    /// other error is final.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        std::future::poll_fn(|cx| self.poll_message(cx))
            .await
            .unwrap_or(Err(ClientError::Closed))
    }

    /// Up to `max` messages, waiting only for the first.
    pub async fn recv_batch(&mut self, max: usize) -> Result<Vec<Message>, ClientError> {
        std::future::poll_fn(|cx| self.poll_batch(cx, max))
            .await
            .unwrap_or(Err(ClientError::Closed))
    }

    /// The next message if one comes within `timeout`; `Ok(None)` if none did. Nothing is
    /// lost when the time runs out: a message that arrives later waits for the next call.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Option<Message>, ClientError> {
        within(timeout, self.recv()).await
    }

    /// A message that has already arrived, without waiting; `Ok(None)` if none has. (The
    /// consumer reads its connection only when polled: call it in a loop with other work,
    /// or use [`poll`](Self::poll) to wait.)
    pub fn try_poll(&mut self) -> Result<Option<Message>, ClientError> {
        self.without_waiting(Self::poll_message)
    }

    /// Up to `max` messages that have already arrived, without waiting.
    pub(crate) fn try_batch(&mut self, max: usize) -> Result<Option<Vec<Message>>, ClientError> {
        self.without_waiting(|consumer, cx| consumer.poll_batch(cx, max))
    }

    /// What `poll` gives at once; `Ok(None)` when it would wait.
    fn without_waiting<T>(
        &mut self,
        poll: impl FnOnce(&mut Self, &mut Context<'_>) -> Poll<Option<Result<T, ClientError>>>,
    ) -> Result<Option<T>, ClientError> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match poll(self, &mut cx) {
            Poll::Ready(Some(received)) => received.map(Some),
            Poll::Ready(None) => Err(ClientError::Closed),
            Poll::Pending => Ok(None),
        }
    }

    /// Messages one at a time as an async stream (the lowest-latency tier).
    pub fn stream(&mut self) -> MessageStream<'_> {
        MessageStream { consumer: self }
    }

    /// Messages in vectors of up to `max` (fewer wake-ups per message).
    pub fn buffered_stream(&mut self, max: usize) -> BufferedStream<'_> {
        BufferedStream {
            consumer: self,
            max: max.max(1),
        }
    }

    /// Takes a message off the ready queue, granting permits back as the application takes
    /// them, a tenth of the receiver queue at a time per partition: small refills keep a
    /// shared subscription balanced between consumers of equal speed.
    fn take_ready(&mut self) -> Option<Message> {
        let message = self.ready.pop_front()?;
        let p = message.partition as usize;
        let current = message.consumer_id == self.consumer_id;
        if let Some(taken) = self.taken.get_mut(p).filter(|_| current) {
            *taken += 1;
            if *taken >= (self.spec.receiver_queue / PERMIT_REFILL_FRACTION).max(1) {
                let _ = self.attachment.current().legs.send(
                    message.partition,
                    &ClientFrame::Flow {
                        consumer_id: self.consumer_id,
                        partition: Some(message.partition),
                        permits: *taken,
                    },
                );
                *taken = 0;
            }
        }
        self.positions.insert(message.partition, message.offset + 1);
        Some(message)
    }

    /// Moves whatever has arrived into the ready queue; `Ready(Some(Err))` when the consumer
    /// ended (`Ready(None)` after that) or a partition is blocked (the consumer goes on).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<(), ClientError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.ready.is_empty() {
            if let Some(e) = self.held_error.take() {
                return Poll::Ready(Some(Err(e)));
            }
        }
        let mut got = false;
        loop {
            match self.events.poll_recv(cx) {
                Poll::Ready(Some(ConsumerEvent::Messages(messages))) => {
                    self.ready.extend(messages);
                    got = true;
                    if self.ready.len() >= 4096 {
                        break;
                    }
                }
                Poll::Ready(Some(ConsumerEvent::Blocked(e))) => {
                    // Reported once, after what arrived before it; the consumer goes on.
                    if got || !self.ready.is_empty() {
                        self.held_error = Some(e);
                        break;
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(ConsumerEvent::Closed(e))) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(ConsumerEvent::Lost { consumer_id, error })) => {
                    // Each leg of an attachment reports its own loss: one reattach for all,
                    // and none for an attachment already replaced.
                    if consumer_id != self.consumer_id || self.reattaching.is_some() {
                        continue;
                    }
                    if self.spec.reconnect_timeout.is_zero() {
                        self.ended = true;
                        return Poll::Ready(Some(Err(error)));
                    }
                    let events = self.events_tx.clone();
                    tracing::info!(topic = %self.spec.topic, subscription = %self.spec.subscription,
                        %error, "consumer lost a leader's connection: attaching again");
                    let old = self.attachment.current();
                    self.reattaching = Some(Box::pin(reattach(self.spec.clone(), old, events)));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(ClientError::Closed)));
                }
                Poll::Pending => break,
            }
        }
        if let Some(reattaching) = &mut self.reattaching {
            match reattaching.as_mut().poll(cx) {
                Poll::Ready(Ok((attached, partitions))) => {
                    self.consumer_id = attached.consumer_id;
                    // The topic may have grown meanwhile; the new attachment has every part.
                    self.partitions = partitions;
                    self.taken = vec![0; partitions as usize];
                    self.attachment.replace(attached);
                    self.reattaching = None;
                    tracing::info!(topic = %self.spec.topic,
                        subscription = %self.spec.subscription, "consumer attached again");
                    // Its deliveries may already be in the channel.
                    cx.waker().wake_by_ref();
                }
                Poll::Ready(Err(e)) => {
                    self.ended = true;
                    self.reattaching = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => {}
            }
        }
        if got {
            Poll::Ready(Some(Ok(())))
        } else {
            Poll::Pending
        }
    }

    pub(crate) fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, ClientError>>> {
        loop {
            if let Some(message) = self.take_ready() {
                return Poll::Ready(Some(Ok(message)));
            }
            match self.poll_fill(cx) {
                Poll::Ready(Some(Ok(()))) => continue,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    pub(crate) fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Option<Result<Vec<Message>, ClientError>>> {
        if self.ready.is_empty() {
            match self.poll_fill(cx) {
                Poll::Ready(Some(Ok(()))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        } else {
            // Top up with whatever else has arrived, without waiting.
            let _ = self.poll_fill(cx);
        }
        let mut batch = Vec::with_capacity(max.min(self.ready.len()));
        while batch.len() < max {
            match self.take_ready() {
                Some(message) => batch.push(message),
                None => break,
            }
        }
        Poll::Ready(Some(Ok(batch)))
    }
}
