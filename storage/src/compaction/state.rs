//! What a partition's cleaner keeps between passes, and what a truncation does to it.

use super::CleanedRanges;
use crate::signal::Notify;
use std::cell::{Cell, RefCell};

/// Where compaction of one partition stands.
#[derive(Default)]
pub(crate) struct Cleaning {
    /// How far, and when, the log was cleaned (its checkpoint, as last written).
    pub(crate) ranges: RefCell<CleanedRanges>,
    /// A pass is running.
    pub(crate) running: Cell<bool>,
    /// Truncations so far: a pass that saw one begin or end does not record its end.
    pub(crate) truncations: Cell<u64>,
    /// The checkpoint is being written (a pass's and a truncation's writes take turns).
    pub(crate) saving: Cell<bool>,
    /// A checkpoint write ended.
    pub(crate) saved: Notify,
}

impl Cleaning {
    /// The state of a log recovered with `ranges` in its checkpoint.
    pub(crate) fn new(ranges: CleanedRanges) -> Cleaning {
        Cleaning {
            ranges: RefCell::new(ranges),
            ..Cleaning::default()
        }
    }

    /// A truncation that cuts the log at `offset` begins: what lies above is no longer clean.
    /// Returns whether it cut the clean part: then the checkpoint must be written again once
    /// the truncation is done, or it would count records appended above the cut as cleaned
    /// long ago (their tombstones would expire without their keys being mapped).
    pub(crate) fn truncation_begins(&self, offset: u64) -> bool {
        self.truncations.set(self.truncations.get() + 1);
        let mut ranges = self.ranges.borrow_mut();
        let clean_end = ranges.clean_end();
        ranges.truncate(offset);
        ranges.clean_end() != clean_end
    }

    /// The truncation ended.
    pub(crate) fn truncation_ended(&self) {
        self.truncations.set(self.truncations.get() + 1);
    }
}
