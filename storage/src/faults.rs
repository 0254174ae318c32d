//! Fault injection for the storage engine's files: make writes or fdatasync fail on command.
//!
//! Attached to a partition at open; every [`crate::file::SegmentFile`] of that partition
//! consults it. Used by tests (and by the reliability suite) against real files, so the code
//! paths that handle EIO, ENOSPC and short writes are exercised for real.

use std::cell::Cell;
use std::io;

/// Switches that make the partition's file operations fail. All start off.
#[derive(Debug, Default)]
pub struct Faults {
    fail_syncs: Cell<bool>,
    enospc_writes: Cell<bool>,
    short_next_write: Cell<bool>,
    syncs: Cell<u64>,
    writes: Cell<u64>,
}

impl Faults {
    /// Every fdatasync from now on fails with EIO.
    pub fn fail_syncs(&self, on: bool) {
        self.fail_syncs.set(on);
    }
    /// Every write from now on fails with ENOSPC, as on a full disk.
    pub fn fail_writes_with_enospc(&self, on: bool) {
        self.enospc_writes.set(on);
    }
    /// The next write reports writing half its bytes.
    pub fn shorten_next_write(&self) {
        self.short_next_write.set(true);
    }
    /// Number of fdatasyncs attempted so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.get()
    }
    /// Number of writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.get()
    }

    pub(crate) fn before_write(&self, _len: usize) -> io::Result<()> {
        self.writes.set(self.writes.get() + 1);
        if self.enospc_writes.get() {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    pub(crate) fn after_write(&self, written: usize) -> usize {
        if self.short_next_write.replace(false) {
            written / 2
        } else {
            written
        }
    }

    pub(crate) fn before_sync(&self) -> io::Result<()> {
        self.syncs.set(self.syncs.get() + 1);
        if self.fail_syncs.get() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}
