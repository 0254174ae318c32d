//! A message as a consumer receives it: bytes as they arrived, or typed by a
//! [`crate::TypedConsumer`]'s deserializers.

use crate::serde_codec::{CodecError, Deserializer};
use bytes::Bytes;
use std::sync::Arc;

/// A delivered message. Key, value and headers share the bytes of the frame they arrived in;
/// `Message<K, V>` is one whose key and value were deserialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<K = Bytes, V = Bytes> {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Milliseconds since the epoch, as produced.
    pub timestamp: i64,
    /// Earlier deliveries of this message (0 on the first).
    pub redeliveries: u32,
    /// Key.
    pub key: Option<K>,
    /// Value.
    pub value: V,
    /// Headers (key, value or `None`), in the producer's order.
    pub headers: Vec<oxbow_core::Header>,
    pub(crate) consumer_id: u64,
}

impl<K, V> Message<K, V> {
    /// The value of the first header named `key`; `Some(None)` for a header with a null value.
    pub fn header(&self, key: &str) -> Option<Option<&[u8]>> {
        self.headers
            .iter()
            .find(|(k, _)| &k[..] == key.as_bytes())
            .map(|(_, v)| v.as_deref())
    }
}

impl Message {
    /// This message with its key and value deserialized; the error says which failed.
    pub fn deserialize<K, V>(
        &self,
        keys: &impl Deserializer<K>,
        values: &impl Deserializer<V>,
    ) -> Result<Message<K, V>, CodecError> {
        let key = match &self.key {
            Some(key) => Some(
                keys.deserialize(&self.topic, key)
                    .map_err(|e| CodecError(format!("key: {e}")))?,
            ),
            None => None,
        };
        let value = (values.deserialize(&self.topic, &self.value))
            .map_err(|e| CodecError(format!("value: {e}")))?;
        Ok(Message {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            redeliveries: self.redeliveries,
            key,
            value,
            headers: self.headers.clone(),
            consumer_id: self.consumer_id,
        })
    }
}
