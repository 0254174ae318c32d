//! The sequential readers of one partition: where each recent read from disk ended, so the
//! next read of the same reader starts at the exact byte (no index lookup, no frames re-read
//! before it) and is known to be sequential, which is what read-ahead waits for.

use std::collections::VecDeque;

/// Readers remembered per partition. More concurrent sequential readers than this (consumer
/// groups and subscriptions of one partition) still read correctly, through the index, but
/// may lose read-ahead.
const STREAMS_MAX: usize = 32;

/// Where a read from disk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    /// The offset after the last batch read: the next read of this reader starts there.
    pub next_offset: u64,
    /// Cache key of the segment the read ended in.
    pub key: u64,
    /// Byte after the last frame read in that segment.
    pub position: u64,
}

/// Recent read ends of a partition, newest last.
#[derive(Debug, Default)]
pub struct ReadStreams {
    ends: VecDeque<StreamEnd>,
}

impl ReadStreams {
    /// The read that ended where a read from `next_offset` in segment `key` begins, if any.
    pub fn continuing(&self, next_offset: u64, key: u64) -> Option<StreamEnd> {
        self.ends
            .iter()
            .rev()
            .find(|end| end.next_offset == next_offset && end.key == key)
            .copied()
    }

    /// A read from `from` ended at `end`: the reader's stream moves on (or a new one starts,
    /// replacing the oldest beyond the bound).
    pub fn advance(&mut self, from: u64, end: StreamEnd) {
        if let Some(at) = self.ends.iter().rposition(|e| e.next_offset == from) {
            self.ends.remove(at);
        }
        self.ends.push_back(end);
        while self.ends.len() > STREAMS_MAX {
            self.ends.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(next_offset: u64, position: u64) -> StreamEnd {
        StreamEnd {
            next_offset,
            key: 7,
            position,
        }
    }

    #[test]
    fn a_reader_continues_where_it_stopped_and_others_do_not_disturb_it() {
        let mut streams = ReadStreams::default();
        streams.advance(0, end(100, 4096));
        streams.advance(500, end(600, 90_000));
        assert_eq!(streams.continuing(100, 7), Some(end(100, 4096)));
        assert_eq!(streams.continuing(100, 8), None, "another segment");
        assert_eq!(streams.continuing(101, 7), None, "not where a read ended");
        streams.advance(100, end(200, 8192));
        assert_eq!(streams.continuing(100, 7), None, "the stream moved on");
        assert_eq!(streams.continuing(200, 7), Some(end(200, 8192)));
        assert_eq!(streams.continuing(600, 7), Some(end(600, 90_000)));
    }

    #[test]
    fn the_oldest_streams_are_forgotten_beyond_the_bound() {
        let mut streams = ReadStreams::default();
        for i in 0..(STREAMS_MAX as u64 + 5) {
            streams.advance(i * 1000, end(i * 1000 + 10, i));
        }
        assert_eq!(streams.continuing(10, 7), None);
        let last = STREAMS_MAX as u64 + 4;
        assert!(streams.continuing(last * 1000 + 10, 7).is_some());
        assert_eq!(streams.ends.len(), STREAMS_MAX);
    }
}
