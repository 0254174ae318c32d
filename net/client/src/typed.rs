//! Typed consumers and producers: any tier's messages deserialized into the application's
//! key and value types, and keys and values serialized on their way out.

use crate::acker::Acker;
use crate::error::ClientError;
use crate::message::Message;
use crate::producer::{PendingSend, Producer};
use crate::serde_codec::{Deserializer, Serializer};
use crate::tiers::Receive;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Duration;

/// A consumer of any tier whose messages arrive as `Message<K, V>` ([`Receive::typed`]).
///
/// A message whose key or value does not deserialize is the error
/// [`ClientError::Undeserializable`], which carries the message as it arrived: acknowledge it
/// to pass over it, or nack it so that it comes again (and, on a subscription with a
/// dead-letter topic, moves there after its redeliveries). The next call goes on with the
/// message after it; nothing is skipped silently.
pub struct TypedConsumer<C, K, V, KD, VD> {
    inner: C,
    keys: KD,
    values: VD,
    /// Received and not yet handed out, in order.
    ready: VecDeque<Message>,
    types: PhantomData<fn() -> (K, V)>,
}

impl<C, K, V, KD, VD> TypedConsumer<C, K, V, KD, VD>
where
    C: Receive,
    KD: Deserializer<K>,
    VD: Deserializer<V>,
{
    pub(crate) fn new(inner: C, keys: KD, values: VD) -> Self {
        TypedConsumer {
            inner,
            keys,
            values,
            ready: VecDeque::new(),
            types: PhantomData,
        }
    }

    /// The next message, waiting for it.
    pub async fn recv(&mut self) -> Result<Message<K, V>, ClientError> {
        while self.ready.is_empty() {
            self.ready.extend(self.inner.next_batch().await?);
        }
        self.hand_out()
    }

    /// The next message if one comes within `timeout`; `Ok(None)` if none did.
    pub async fn recv_within(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Message<K, V>>, ClientError> {
        if self.ready.is_empty() {
            match self.inner.next_batch_within(timeout).await? {
                Some(batch) => self.ready.extend(batch),
                None => return Ok(None),
            }
        }
        self.try_recv()
    }

    /// A message that has already arrived, without waiting; `Ok(None)` if none has.
    pub fn try_recv(&mut self) -> Result<Option<Message<K, V>>, ClientError> {
        if self.ready.is_empty() {
            match self.inner.try_next_batch()? {
                Some(batch) => self.ready.extend(batch),
                None => return Ok(None),
            }
        }
        match self.ready.is_empty() {
            true => Ok(None),
            false => self.hand_out().map(Some),
        }
    }

    /// A handle that acknowledges (or nacks) the messages, typed or not, from anywhere.
    pub fn acker(&self) -> Acker {
        self.inner.acker()
    }

    /// The consumer underneath (messages received and not yet handed out are dropped; a
    /// reliable subscription delivers them again).
    pub fn into_inner(self) -> C {
        self.inner
    }

    fn hand_out(&mut self) -> Result<Message<K, V>, ClientError> {
        let raw = self
            .ready
            .pop_front()
            .expect("only called with a message ready");
        raw.deserialize(&self.keys, &self.values)
            .map_err(|e| ClientError::Undeserializable {
                reason: e.0,
                message: Box::new(raw),
            })
    }
}

/// A producer that serializes keys of type `K` and values of type `V`
/// ([`Producer::typed`]). A key or value that does not serialize is
/// [`ClientError::Serialization`], and nothing is sent.
pub struct TypedProducer<K: ?Sized, V: ?Sized, KS, VS> {
    producer: Producer,
    keys: KS,
    values: VS,
    types: PhantomData<fn(&K, &V)>,
}

impl<K, V, KS, VS> TypedProducer<K, V, KS, VS>
where
    K: ?Sized,
    V: ?Sized,
    KS: Serializer<K>,
    VS: Serializer<V>,
{
    pub(crate) fn new(producer: Producer, keys: KS, values: VS) -> Self {
        TypedProducer {
            producer,
            keys,
            values,
            types: PhantomData,
        }
    }

    /// Serializes and sends a message, as [`Producer::send`] does.
    pub async fn send(&self, key: Option<&K>, value: &V) -> Result<PendingSend, ClientError> {
        self.send_with_headers(key, value, &[]).await
    }

    /// Serializes and sends a message with headers, as [`Producer::send_with_headers`] does.
    pub async fn send_with_headers(
        &self,
        key: Option<&K>,
        value: &V,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<PendingSend, ClientError> {
        let topic = self.producer.topic();
        let serialization = |e: crate::CodecError| ClientError::Serialization(e.0);
        let key = (key.map(|key| self.keys.serialize(topic, key)))
            .transpose()
            .map_err(serialization)?;
        let value = (self.values.serialize(topic, value)).map_err(serialization)?;
        (self.producer)
            .send_with_headers(key.as_deref(), &value, headers)
            .await
    }

    /// Sends every open batch and waits for their answers ([`Producer::flush`]).
    pub async fn flush(&self) -> Result<(), ClientError> {
        self.producer.flush().await
    }

    /// The untyped producer underneath.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }
}
