//! A message as a consumer receives it.

use bytes::Bytes;
use std::sync::Arc;

/// A delivered message. Key, value and headers share the bytes of the frame they arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
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
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
    /// Headers (key, value or `None`), in the producer's order.
    pub headers: Vec<oxbow_core::Header>,
    pub(crate) consumer_id: u64,
}

impl Message {
    /// The value of the first header named `key`; `Some(None)` for a header with a null value.
    pub fn header(&self, key: &str) -> Option<Option<&[u8]>> {
        self.headers
            .iter()
            .find(|(k, _)| &k[..] == key.as_bytes())
            .map(|(_, v)| v.as_deref())
    }
}
