//! Admission and offset assignment: who may queue, in what order, at which offsets.
//!
//! Appends that must wait for queue space (`append_queue_bytes_max`) hold a ticket and are
//! admitted in arrival order, and a new append queues behind them even when space is free:
//! otherwise a batch arriving just as space frees up could overtake one that was woken but not
//! yet run, and a pipelining client's batches would land out of order.

use super::{LogCore, Pending};
use crate::error::AppendError;
use crate::partition::Appended;
use crate::producers::SequenceCheck;
use oxbow_core::RecordBatch;

/// What became of an append handed to the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// Queued for the writer at these offsets; its waiter is told when it is durable.
    Queued(Appended),
    /// An idempotent producer's retry of a batch already in the log at these offsets: answer
    /// once they are durable (the first attempt may still be in flight).
    Duplicate(Appended),
}

impl<A, T> LogCore<A, T> {
    /// Refuses appends once the log is stopped or closing.
    pub(crate) fn check_open(&self) -> Result<(), AppendError> {
        if let Some(why) = &self.stopped {
            return Err(AppendError::Stopped(why.clone()));
        }
        if self.closing {
            return Err(AppendError::Closed);
        }
        // An append admitted now would take an offset the truncation is about to change.
        if self.truncation.is_some() || self.truncating {
            return Err(AppendError::Truncating);
        }
        Ok(())
    }

    /// Joins the line of appends waiting for queue space; returns the ticket.
    pub(crate) fn join_line(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.line.push_back(ticket);
        ticket
    }

    /// Leaves the line (admitted, failed or gone); returns whether the ticket was at its head,
    /// in which case the others must look again.
    pub(crate) fn leave_line(&mut self, ticket: u64) -> bool {
        let was_head = self.line.front() == Some(&ticket);
        self.line.retain(|t| *t != ticket);
        was_head
    }

    /// Whether an append holding `ticket` (or none, when it just arrived) may queue now.
    pub(crate) fn may_enter(&self, ticket: Option<u64>) -> bool {
        let my_turn = match ticket {
            Some(ticket) => self.line.front() == Some(&ticket),
            None => self.line.is_empty(),
        };
        my_turn && self.pending_bytes < self.config.append_queue_bytes_max
    }

    /// Refuses a batch larger than `batch_bytes_max`.
    pub(crate) fn check_size(&self, batch: &RecordBatch) -> Result<(), AppendError> {
        let size = batch.len() as u64;
        if size > self.config.batch_bytes_max as u64 {
            return Err(AppendError::TooLarge {
                size,
                max: self.config.batch_bytes_max,
            });
        }
        Ok(())
    }

    /// Assigns this leader's next offsets and epoch to `batch` and queues it, after the
    /// idempotent-producer checks. The caller waited for [`LogCore::may_enter`].
    pub(crate) fn append(
        &mut self,
        batch: RecordBatch,
        waiter: A,
    ) -> Result<Admitted, AppendError> {
        self.check_open()?;
        self.check_size(&batch)?;
        match self.producers.check(&batch) {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } => {
                return Ok(Admitted::Duplicate(Appended {
                    base_offset,
                    last_offset,
                }))
            }
            SequenceCheck::OutOfOrder { expected, got } => {
                return Err(AppendError::OutOfOrderSequence { expected, got })
            }
            SequenceCheck::Fenced { current } => {
                return Err(AppendError::ProducerFenced {
                    current_epoch: current,
                })
            }
        }
        let batch = batch.with_base_offset(self.next_offset, self.leader_epoch);
        Ok(Admitted::Queued(self.enqueue(batch, waiter)))
    }

    /// Queues a batch exactly as the leader stored it (its offsets and epoch kept), as a
    /// follower does. It must start at or after the log's end (after the end when the leader
    /// compacted the records between), in an epoch no older than the last one.
    pub(crate) fn append_replicated(
        &mut self,
        batch: RecordBatch,
        waiter: A,
    ) -> Result<Appended, AppendError> {
        self.check_open()?;
        self.check_size(&batch)?;
        if batch.base_offset() < self.next_offset {
            return Err(AppendError::NotContiguous {
                expected: self.next_offset,
                got: batch.base_offset(),
            });
        }
        let epoch = batch.partition_leader_epoch();
        if self.epochs.latest().is_some_and(|latest| epoch < latest) {
            return Err(AppendError::StaleEpoch {
                epoch,
                latest: self.epochs.latest().unwrap_or(epoch),
            });
        }
        self.leader_epoch = self.leader_epoch.max(epoch);
        Ok(self.enqueue(batch, waiter))
    }

    fn enqueue(&mut self, batch: RecordBatch, waiter: A) -> Appended {
        assert!(
            batch.base_offset() >= self.next_offset,
            "offsets are assigned in order"
        );
        let appended = Appended {
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
        };
        self.epochs_dirty |= self
            .epochs
            .assign(batch.partition_leader_epoch(), appended.base_offset);
        self.producers.record(&batch);
        self.txns.record(&batch);
        self.next_offset = appended.last_offset + 1;
        self.tail_cache.push(batch.clone());
        self.pending_bytes += batch.len() as u64;
        self.pending.push_back(Pending { batch, waiter });
        appended
    }
}
