//! The read side of a subscription: where the log is read next, what a read brought, and
//! the undecodable batches that stop a reliable subscription until an operator skips them.

use super::*;

impl<M: Message> Subscription<M> {
    /// Records that the log now ends at `log_end`.
    pub fn on_log_end(&mut self, log_end: u64) {
        self.log_end = self.log_end.max(log_end);
    }

    /// Records that the log now starts at `log_start` (retention removed older segments):
    /// messages below it can no longer be delivered.
    pub fn on_log_start(&mut self, log_start: u64) {
        if self.mark_delete < log_start {
            self.mark_delete = log_start;
            self.acked.remove_below(log_start);
            self.pending.retain(|m| m.offset() >= log_start);
            self.redeliver = self.redeliver.split_off(&log_start);
            self.in_flight = self.in_flight.split_off(&log_start);
            self.cursor_dirty = self.mode == Mode::Reliable;
        }
        if self
            .blocked
            .as_ref()
            .is_some_and(|b| b.last_offset < log_start)
        {
            self.blocked = None;
        }
        self.read_position = self.read_position.max(log_start);
        self.log_end = self.log_end.max(log_start);
    }

    /// Where to read the log next, if a read is due. The shell answers with `on_read` or
    /// `on_read_failed` before the next call returns anything.
    pub fn next_read(&mut self) -> Option<u64> {
        if self.read_in_progress || self.consumers.is_empty() || self.blocked.is_some() {
            return None;
        }
        let read_ahead = self.limits.read_ahead_messages_max as u64;
        if self.mode == Mode::NonReliable {
            // At most once from the tail: never further behind than the read-ahead, and what
            // nobody takes in time makes room for what is new.
            if self.log_end.saturating_sub(self.read_position) > read_ahead {
                let skip_to = self.log_end - read_ahead;
                self.dropped += skip_to - self.read_position;
                self.read_position = skip_to;
            }
            if self.pending.len() as u64 >= read_ahead && self.read_position < self.log_end {
                self.dropped += self.pending.len() as u64;
                self.pending.clear();
            }
        }
        if self.read_position >= self.log_end || self.pending.len() as u64 >= read_ahead {
            return None;
        }
        self.read_in_progress = true;
        Some(self.read_position)
    }

    /// Takes the messages of a read that covered offsets up to `read_end` (exclusive).
    /// Offsets in that span without a message (unreadable or compressed batches the shell
    /// skipped) count as passed.
    pub fn on_read(&mut self, messages: Vec<M>, read_end: u64) {
        assert!(self.read_in_progress, "on_read without next_read");
        self.read_in_progress = false;
        let from = self.read_position;
        let mut expected = from;
        for message in messages {
            let offset = message.offset();
            if offset < from || offset >= read_end {
                continue;
            }
            if offset > expected && self.mode == Mode::Reliable {
                self.acked.insert(expected, offset);
            }
            expected = offset + 1;
            if offset < self.mark_delete || self.acked.contains(offset) {
                continue;
            }
            self.pending.push_back(message);
        }
        if read_end > expected && self.mode == Mode::Reliable {
            self.acked.insert(expected, read_end);
        }
        self.read_position = self.read_position.max(read_end);
        self.log_end = self.log_end.max(read_end);
        self.advance_mark_delete();
    }

    /// A read failed; the next `next_read` tries again.
    pub fn on_read_failed(&mut self) {
        self.read_in_progress = false;
    }

    /// The read that ended at `on_read` reached a batch the shell could not split into
    /// messages. Reliable: the subscription stops in front of it (nothing at or after it is
    /// read, the cursor never passes it) until [`Subscription::skip`]; what was read before it
    /// is still delivered. Non-reliable: its records count as dropped and reading goes on.
    pub fn on_undecodable(&mut self, batch: Undecodable) {
        assert!(
            batch.base_offset <= batch.last_offset,
            "undecodable batch {batch:?} has no offsets"
        );
        let from = self.read_position.max(batch.base_offset);
        if batch.last_offset < from {
            return;
        }
        match self.mode {
            Mode::Reliable => self.blocked = Some(batch),
            Mode::NonReliable => {
                self.dropped += batch.last_offset + 1 - from;
                self.read_position = batch.last_offset + 1;
            }
        }
    }

    /// Batches an operator skipped (first and last offset), newest last.
    pub fn skipped(&self) -> &[(u64, u64)] {
        &self.skipped
    }

    /// The undecodable batch a reliable subscription stopped at, if any.
    pub fn blocked(&self) -> Option<&Undecodable> {
        self.blocked.as_ref()
    }

    /// An operator's decision to pass over the undecodable batch holding `offset`: its offsets
    /// count as acknowledged, the skip is kept in the cursor, and reading goes on after it.
    pub fn skip(&mut self, offset: u64) -> Result<(u64, u64), SkipError> {
        let Some(batch) = self
            .blocked
            .take_if(|b| (b.base_offset..=b.last_offset).contains(&offset))
        else {
            return Err(SkipError {
                offset,
                blocked: self
                    .blocked
                    .as_ref()
                    .map(|b| (b.base_offset, b.last_offset)),
            });
        };
        let from = batch.base_offset.max(self.mark_delete);
        self.acked.insert(from, batch.last_offset + 1);
        self.read_position = self.read_position.max(batch.last_offset + 1);
        self.log_end = self.log_end.max(self.read_position);
        if self.skipped.len() >= SKIPPED_KEPT {
            self.skipped.remove(0);
        }
        self.skipped.push((batch.base_offset, batch.last_offset));
        self.cursor_dirty = true;
        self.advance_mark_delete();
        Ok((batch.base_offset, batch.last_offset))
    }

    /// Moves the cursor to `offset` (clamped by the shell to the log); everything owed is
    /// forgotten and reading starts again there.
    pub fn seek(&mut self, offset: u64) {
        self.mark_delete = offset;
        self.read_position = offset;
        self.acked.clear();
        self.pending.clear();
        self.redeliver.clear();
        self.in_flight.clear();
        self.dead_letter_queue.clear();
        self.dead_lettering.clear();
        // A read under way would bring messages from before the seek.
        self.read_in_progress = false;
        self.blocked = None;
        self.cursor_dirty = self.mode == Mode::Reliable;
    }
}
