//! Decoded records of a partition's recent compressed batches, shared by its subscriptions.
//!
//! Several subscriptions of one partition read the same batches at about the same time (a
//! fan-out, or consumers that keep up with the tail). Decompressing a batch costs far more
//! than reading it from the tail cache, so the owner shard keeps the decoded messages of the
//! last few compressed batches and every subscription takes them from here: each batch is
//! decompressed once, not once per subscription. Uncompressed batches are split in place (a
//! slice per field), which costs no more than a lookup, so they are not kept.

use crate::message::{messages_of, StoredMessage};
use oxbow_core::{BatchError, Codec, RecordBatch};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

/// Bytes counted per message beyond its data (the message struct and its share of the maps).
const MESSAGE_OVERHEAD_BYTES: u64 = 96;

/// A batch is known by where it is and by its producer's checksum, so a batch written again at
/// the same offset after a truncation is never served from an older decoding.
type BatchKey = (u64, u32, usize);

/// The cache of one partition; owned by the partition's shard (hence `Rc`, not `Arc`).
#[derive(Debug)]
pub struct DecodedBatches {
    bytes_max: u64,
    bytes: u64,
    batches: BTreeMap<BatchKey, (Rc<[StoredMessage]>, u64)>,
    /// Insertion order, oldest first: the first to go when room is needed.
    order: VecDeque<BatchKey>,
    decoded: u64,
    hits: u64,
}

impl DecodedBatches {
    /// An empty cache holding at most `bytes_max` bytes of decoded messages.
    pub fn new(bytes_max: u64) -> DecodedBatches {
        DecodedBatches {
            bytes_max,
            bytes: 0,
            batches: BTreeMap::new(),
            order: VecDeque::new(),
            decoded: 0,
            hits: 0,
        }
    }

    /// The messages of `batch`: decoded now, or taken from an earlier decoding of the same
    /// batch.
    pub fn messages(
        &mut self,
        batch: &RecordBatch,
        decompressed_bytes_max: u64,
    ) -> Result<Rc<[StoredMessage]>, BatchError> {
        if batch.codec()? == Codec::None {
            return Ok(messages_of(batch, decompressed_bytes_max)?.into());
        }
        let key = (batch.base_offset(), batch_crc(batch), batch.len());
        if let Some((messages, _)) = self.batches.get(&key) {
            self.hits += 1;
            return Ok(messages.clone());
        }
        let messages: Rc<[StoredMessage]> = messages_of(batch, decompressed_bytes_max)?.into();
        self.decoded += 1;
        let size = messages
            .iter()
            .map(|m| m.data_bytes() as u64 + MESSAGE_OVERHEAD_BYTES)
            .sum::<u64>();
        if size <= self.bytes_max {
            while self.bytes + size > self.bytes_max {
                let oldest = self
                    .order
                    .pop_front()
                    .expect("bytes are held by some batch");
                let (_, freed) = self.batches.remove(&oldest).expect("ordered keys are held");
                self.bytes -= freed;
            }
            self.batches.insert(key, (messages.clone(), size));
            self.order.push_back(key);
            self.bytes += size;
        }
        Ok(messages)
    }

    /// Compressed batches decoded so far, and lookups answered without decoding.
    pub fn counts(&self) -> (u64, u64) {
        (self.decoded, self.hits)
    }

    /// Bytes of decoded messages held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn batch_crc(batch: &RecordBatch) -> u32 {
    u32::from_be_bytes(
        batch.bytes()[17..21]
            .try_into()
            .expect("a batch has a header"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::BatchBuilder;

    fn batch(base: u64, codec: Codec, values: &[&str]) -> RecordBatch {
        let mut builder = BatchBuilder::new(0).compression(codec, None);
        for value in values {
            builder.push(None, Some(value.as_bytes()), 0);
        }
        builder.build().with_base_offset(base, 0)
    }

    #[test]
    fn a_compressed_batch_is_decoded_once_for_every_reader() {
        let mut cache = DecodedBatches::new(1 << 20);
        let lz4 = batch(10, Codec::Lz4, &["a", "b", "c"]);
        for _ in 0..4 {
            let messages = cache.messages(&lz4, 1 << 20).unwrap();
            let offsets: Vec<u64> = messages.iter().map(|m| m.offset).collect();
            assert_eq!(offsets, [10, 11, 12]);
        }
        assert_eq!(cache.counts(), (1, 3));
        // Uncompressed batches are split each time and never held.
        let plain = batch(13, Codec::None, &["d"]);
        cache.messages(&plain, 1 << 20).unwrap();
        assert_eq!(cache.counts(), (1, 3));
    }

    #[test]
    fn the_budget_evicts_the_oldest_and_a_rewritten_offset_is_decoded_again() {
        let one = |base: u64, value: &str| batch(base, Codec::Zstd, &[value]);
        let size = MESSAGE_OVERHEAD_BYTES + 1;
        let mut cache = DecodedBatches::new(2 * size);
        for base in 0..3 {
            cache.messages(&one(base, "x"), 1 << 20).unwrap();
        }
        assert_eq!(cache.bytes(), 2 * size);
        cache.messages(&one(0, "x"), 1 << 20).unwrap();
        assert_eq!(cache.counts(), (4, 0), "batch 0 was evicted");
        // Offset 2 written again with other bytes (after a truncation): not the old decoding.
        let rewritten = cache.messages(&one(2, "y"), 1 << 20).unwrap();
        assert_eq!(&rewritten[0].value[..], b"y");
        // A batch larger than the whole budget is served but not kept.
        let mut tiny = DecodedBatches::new(10);
        tiny.messages(&one(0, "x"), 1 << 20).unwrap();
        assert_eq!(tiny.bytes(), 0);
    }
}
