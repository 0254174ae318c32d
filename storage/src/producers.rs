//! Idempotent-producer state of one partition: which batches each producer id has appended.
//!
//! Kafka's idempotence contract: batches of one producer (id, epoch) carry consecutive sequence
//! numbers. A batch whose sequences were already appended is a retry and is answered with the
//! original offsets; a batch that skips ahead is out of order; an older epoch is fenced. The last
//! [`PRODUCER_BATCHES_KEPT`] batches of each producer are remembered (Kafka keeps five, the
//! most its clients have in flight with idempotence on; more covers them too). The state is rebuilt from the log's active
//! segment on open, so it is as durable as the data.

use oxbow_core::RecordBatch;
use std::collections::{HashMap, VecDeque};

pub use oxbow_core::PRODUCER_BATCHES_KEPT;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remembered {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    last_offset: u64,
    max_timestamp: i64,
}

/// An idempotent producer as its partition knows it (Kafka's DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    /// Producer id.
    pub id: i64,
    /// Its current epoch.
    pub epoch: i16,
    /// Sequence of its last appended record.
    pub last_sequence: i32,
    /// Newest record time of its last appended batch (ms).
    pub last_timestamp: i64,
    /// Offset of its last appended record.
    pub last_offset: u64,
    /// Where its open transaction began in this partition, if one is open.
    pub txn_start_offset: Option<u64>,
}

#[derive(Debug, Default)]
struct Producer {
    epoch: i16,
    batches: VecDeque<Remembered>,
}

/// What to do with a batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already appended at these offsets: answer success without appending.
    Duplicate {
        /// Offset of its first record.
        base_offset: u64,
        /// Offset of its last record.
        last_offset: u64,
    },
    /// Its first sequence does not follow the producer's last one.
    OutOfOrder {
        /// The sequence that would have been accepted.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// The producer's epoch is older than one already seen (a zombie instance).
    Fenced {
        /// The current epoch.
        current: i16,
    },
}

/// Producer state of one partition. Owned by the partition.
#[derive(Debug, Default)]
pub struct ProducerState {
    producers: HashMap<i64, Producer>,
}

fn last_sequence(batch: &RecordBatch) -> i32 {
    // Sequences wrap at i32::MAX, as Kafka's do.
    ((batch.base_sequence() as i64 + batch.last_offset_delta() as i64) % (i32::MAX as i64 + 1))
        as i32
}

impl ProducerState {
    /// Judges a batch before it is appended. Batches without a producer id always append.
    pub fn check(&self, batch: &RecordBatch) -> SequenceCheck {
        if batch.producer_id() < 0 {
            return SequenceCheck::Append;
        }
        let Some(producer) = self.producers.get(&batch.producer_id()) else {
            // Unknown producer (new, or its batches were cut by retention): nothing to compare.
            return SequenceCheck::Append;
        };
        let epoch = batch.producer_epoch();
        if epoch < producer.epoch {
            return SequenceCheck::Fenced {
                current: producer.epoch,
            };
        }
        if batch.is_control() {
            // A transaction marker, written by the broker: it has no sequence.
            return SequenceCheck::Append;
        }
        if epoch > producer.epoch {
            return match batch.base_sequence() {
                0 => SequenceCheck::Append,
                got => SequenceCheck::OutOfOrder { expected: 0, got },
            };
        }
        let (first, last) = (batch.base_sequence(), last_sequence(batch));
        if let Some(seen) = producer
            .batches
            .iter()
            .find(|b| b.first_sequence == first && b.last_sequence == last)
        {
            return SequenceCheck::Duplicate {
                base_offset: seen.base_offset,
                last_offset: seen.last_offset,
            };
        }
        let expected = match producer.batches.back() {
            Some(b) if b.last_sequence == i32::MAX => 0,
            Some(b) => b.last_sequence + 1,
            None => return SequenceCheck::Append,
        };
        if first == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                got: first,
            }
        }
    }

    /// Remembers a batch that was given offsets (on append, and while recovering).
    pub fn record(&mut self, batch: &RecordBatch) {
        if batch.producer_id() < 0 {
            return;
        }
        let producer = self.producers.entry(batch.producer_id()).or_default();
        if batch.producer_epoch() != producer.epoch {
            producer.epoch = batch.producer_epoch();
            producer.batches.clear();
        }
        if batch.is_control() {
            // A marker takes no sequence: the producer's next batch follows its last one (or
            // starts at 0 under the epoch the marker brought, as Kafka's does).
            return;
        }
        producer.batches.push_back(Remembered {
            first_sequence: batch.base_sequence(),
            last_sequence: last_sequence(batch),
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
            max_timestamp: batch.max_timestamp(),
        });
        while producer.batches.len() > PRODUCER_BATCHES_KEPT {
            producer.batches.pop_front();
        }
    }

    /// The producers with a batch remembered, by id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut active: Vec<ActiveProducer> = (self.producers.iter())
            .filter_map(|(&id, producer)| {
                let last = producer.batches.back()?;
                Some(ActiveProducer {
                    id,
                    epoch: producer.epoch,
                    last_sequence: last.last_sequence,
                    last_timestamp: last.max_timestamp,
                    last_offset: last.last_offset,
                    txn_start_offset: None,
                })
            })
            .collect();
        active.sort_by_key(|p| p.id);
        active
    }

    /// Forgets batches at or above `offset` (their append failed, or the log was truncated).
    pub fn truncate(&mut self, offset: u64) {
        for producer in self.producers.values_mut() {
            producer.batches.retain(|b| b.base_offset < offset);
        }
        self.producers.retain(|_, p| !p.batches.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::BatchBuilder;

    fn batch(epoch: i16, sequence: i32, records: usize, offset: u64) -> RecordBatch {
        let mut builder = BatchBuilder::new(0).producer(7, epoch, sequence);
        for _ in 0..records {
            builder.push(None, Some(b"v"), 0);
        }
        builder.build().with_base_offset(offset, 0)
    }

    #[test]
    fn retries_are_duplicates_gaps_are_out_of_order_old_epochs_are_fenced() {
        let mut state = ProducerState::default();
        assert_eq!(state.check(&batch(0, 0, 3, 0)), SequenceCheck::Append);
        state.record(&batch(0, 0, 3, 0));
        state.record(&batch(0, 3, 2, 3));
        assert_eq!(
            state.check(&batch(0, 0, 3, 99)),
            SequenceCheck::Duplicate {
                base_offset: 0,
                last_offset: 2
            }
        );
        assert_eq!(state.check(&batch(0, 5, 1, 99)), SequenceCheck::Append);
        assert_eq!(
            state.check(&batch(0, 7, 1, 99)),
            SequenceCheck::OutOfOrder {
                expected: 5,
                got: 7
            }
        );
        assert_eq!(
            state.check(&batch(1, 4, 1, 99)),
            SequenceCheck::OutOfOrder {
                expected: 0,
                got: 4
            }
        );
        assert_eq!(state.check(&batch(1, 0, 1, 99)), SequenceCheck::Append);
        state.record(&batch(1, 0, 1, 5));
        assert_eq!(
            state.check(&batch(0, 5, 1, 99)),
            SequenceCheck::Fenced { current: 1 }
        );
        state.truncate(5);
        assert_eq!(
            state.check(&batch(0, 0, 1, 99)),
            SequenceCheck::Append,
            "forgotten after truncation"
        );
    }

    #[test]
    fn markers_take_no_sequence_and_a_new_epoch_restarts_them() {
        use oxbow_core::{MarkerKind, TxnMarker};
        let marker = |epoch: i16, offset: u64| {
            let marker = TxnMarker {
                kind: MarkerKind::Commit,
                coordinator_epoch: 0,
            };
            marker.batch(7, epoch, 0).with_base_offset(offset, 0)
        };
        let mut state = ProducerState::default();
        state.record(&batch(0, 0, 3, 0));
        assert_eq!(state.check(&marker(0, 3)), SequenceCheck::Append);
        state.record(&marker(0, 3));
        assert_eq!(state.check(&batch(0, 3, 1, 4)), SequenceCheck::Append);
        // A marker of a bumped epoch fences the old one, and sequences start again at 0.
        state.record(&marker(1, 4));
        assert_eq!(
            state.check(&batch(0, 3, 1, 5)),
            SequenceCheck::Fenced { current: 1 }
        );
        assert_eq!(
            state.check(&marker(0, 5)),
            SequenceCheck::Fenced { current: 1 }
        );
        assert_eq!(state.check(&batch(1, 0, 1, 5)), SequenceCheck::Append);
    }
}
