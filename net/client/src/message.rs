//! A message as a consumer receives it.

use bytes::Bytes;
use std::sync::Arc;

/// A delivered message. Key and value share the bytes of the frame they arrived in.
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
    pub(crate) consumer_id: u64,
}
