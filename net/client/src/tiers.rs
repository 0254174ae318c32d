//! The consumer's tiers behind one interface: the stream and buffered tiers as async
//! streams, the [`Receive`] trait every tier implements, and [`TieredConsumer`], the tier
//! configuration chose.

use crate::acker::Acker;
use crate::consumer::Consumer;
use crate::dedicated::DedicatedConsumer;
use crate::error::ClientError;
use crate::message::Message;
use crate::serde_codec::Deserializer;
use crate::typed::TypedConsumer;
use futures_core::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The stream tier: one message per item.
pub struct MessageStream<'a> {
    pub(crate) consumer: &'a mut Consumer,
}

impl Stream for MessageStream<'_> {
    type Item = Result<Message, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().consumer.poll_message(cx)
    }
}

/// The buffered tier: vectors of messages.
pub struct BufferedStream<'a> {
    pub(crate) consumer: &'a mut Consumer,
    pub(crate) max: usize,
}

impl Stream for BufferedStream<'_> {
    type Item = Result<Vec<Message>, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.consumer.poll_batch(cx, this.max)
    }
}

/// What every tier offers, for code that works with any of them: batches of messages (of
/// one message on the stream tier), waiting or not, and a handle to acknowledge them.
/// Implemented by [`Consumer`] (all it has ready, up to its receiver queue),
/// [`DedicatedConsumer`] and [`TieredConsumer`].
pub trait Receive {
    /// The next messages, waiting for the first.
    fn next_batch(&mut self) -> impl Future<Output = Result<Vec<Message>, ClientError>> + Send;

    /// The next messages if any come within `timeout`; `Ok(None)` if none did.
    fn next_batch_within(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Vec<Message>>, ClientError>> + Send;

    /// Messages that have already arrived, without waiting; `Ok(None)` if none have.
    fn try_next_batch(&mut self) -> Result<Option<Vec<Message>>, ClientError>;

    /// A handle that acknowledges the messages from anywhere.
    fn acker(&self) -> Acker;

    /// This consumer with its messages deserialized into `Message<K, V>`.
    fn typed<K, V, KD, VD>(self, keys: KD, values: VD) -> TypedConsumer<Self, K, V, KD, VD>
    where
        Self: Sized,
        KD: Deserializer<K>,
        VD: Deserializer<V>,
    {
        TypedConsumer::new(self, keys, values)
    }
}

/// Waits at most `timeout` for `received`; `Ok(None)` when it did not come.
pub(crate) async fn within<T, F>(timeout: Duration, received: F) -> Result<Option<T>, ClientError>
where
    F: Future<Output = Result<T, ClientError>>,
{
    match tokio::time::timeout(timeout, received).await {
        Ok(received) => received.map(Some),
        Err(_) => Ok(None),
    }
}

impl Receive for Consumer {
    async fn next_batch(&mut self) -> Result<Vec<Message>, ClientError> {
        let most = self.spec.receiver_queue as usize;
        self.recv_batch(most).await
    }

    async fn next_batch_within(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Vec<Message>>, ClientError> {
        within(timeout, Receive::next_batch(self)).await
    }

    fn try_next_batch(&mut self) -> Result<Option<Vec<Message>>, ClientError> {
        self.try_batch(self.spec.receiver_queue as usize)
    }

    fn acker(&self) -> Acker {
        Consumer::acker(self)
    }
}

/// A consumer in the tier configuration chose, behind one interface.
pub enum TieredConsumer {
    /// One message at a time.
    Stream(Consumer),
    /// Vectors of up to the given size.
    Buffered(Consumer, usize),
    /// A dedicated thread feeding a channel.
    Dedicated(DedicatedConsumer),
}

impl TieredConsumer {
    /// The next messages: one for the stream tier, up to N for the others.
    pub async fn next_batch(&mut self) -> Result<Vec<Message>, ClientError> {
        match self {
            TieredConsumer::Stream(consumer) => consumer.recv().await.map(|m| vec![m]),
            TieredConsumer::Buffered(consumer, max) => consumer.recv_batch(*max).await,
            TieredConsumer::Dedicated(consumer) => consumer.recv().await,
        }
    }

    /// Detaches; a reliable subscription keeps its cursor for the next consumer.
    pub async fn close(self) -> Result<(), ClientError> {
        match self {
            TieredConsumer::Stream(consumer) | TieredConsumer::Buffered(consumer, _) => {
                consumer.close().await
            }
            // Its thread detaches when it is told to stop.
            TieredConsumer::Dedicated(consumer) => {
                drop(consumer);
                Ok(())
            }
        }
    }

    /// A handle that acknowledges this consumer's messages.
    pub fn acker(&self) -> Acker {
        match self {
            TieredConsumer::Stream(consumer) | TieredConsumer::Buffered(consumer, _) => {
                consumer.acker()
            }
            TieredConsumer::Dedicated(consumer) => consumer.acker(),
        }
    }
}

impl Receive for TieredConsumer {
    async fn next_batch(&mut self) -> Result<Vec<Message>, ClientError> {
        TieredConsumer::next_batch(self).await
    }

    async fn next_batch_within(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Vec<Message>>, ClientError> {
        within(timeout, TieredConsumer::next_batch(self)).await
    }

    fn try_next_batch(&mut self) -> Result<Option<Vec<Message>>, ClientError> {
        match self {
            TieredConsumer::Stream(consumer) => Ok(consumer.try_poll()?.map(|m| vec![m])),
            TieredConsumer::Buffered(consumer, max) => consumer.try_batch(*max),
            TieredConsumer::Dedicated(consumer) => consumer.try_poll(),
        }
    }

    fn acker(&self) -> Acker {
        TieredConsumer::acker(self)
    }
}
