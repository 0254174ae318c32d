//! The Raft log as raft-rs reads it: the latest snapshot, the entries after it, and the hard
//! state, all in memory. It mirrors what is durable: the shell changes it only after the same
//! change reached the disk (see [`super::durable`]).

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// The in-memory mirror of one node's durable Raft log.
#[derive(Debug, Default)]
pub struct MemoryLog {
    hard_state: HardState,
    /// The conf state as of the snapshot; raft-rs replays conf changes after it.
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot, `entries[0].index == snapshot index + 1`.
    entries: Vec<Entry>,
}

impl MemoryLog {
    /// A log as recovered: a snapshot (default: none), the entries after it, the hard state.
    /// A new node of an initial group has no snapshot and the group's voters as `conf_state`.
    pub fn new(
        snapshot: Snapshot,
        conf_state: ConfState,
        entries: Vec<Entry>,
        hard_state: HardState,
    ) -> MemoryLog {
        let after = snapshot.get_metadata().index + 1;
        assert!(
            entries.first().is_none_or(|e| e.index == after),
            "entries continue the snapshot"
        );
        MemoryLog {
            hard_state,
            conf_state,
            snapshot,
            entries,
        }
    }

    /// Whether the log holds nothing yet: no snapshot, no entry.
    pub fn is_new(&self) -> bool {
        self.snapshot_index() == 0 && self.entries.is_empty()
    }

    /// Index of the snapshot (0: none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Records a persisted hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Records a persisted commit index.
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// Appends persisted entries; an entry at an index the log already holds replaces it and
    /// everything after it (a follower's uncommitted suffix overwritten by its leader).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let keep = first.index.saturating_sub(self.snapshot_index() + 1) as usize;
        assert!(
            keep <= self.entries.len(),
            "entries at {} leave a gap after {}",
            first.index,
            self.last()
        );
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Installs a snapshot received from the leader: the whole log is replaced by it.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Takes a snapshot of applied state: entries up to it are dropped, later ones kept.
    pub fn compact_to(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        assert!(meta.index > self.snapshot_index() && meta.index <= self.last());
        let drop = (meta.index - self.snapshot_index()) as usize;
        self.entries.drain(..drop);
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot = snapshot;
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }
}

impl raft::Storage for MemoryLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.snapshot_index() + 1;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last() + 1,
            "entries up to {high} asked of a log ending at {}",
            self.last()
        );
        let mut entries = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let snapshot = self.snapshot.get_metadata();
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        if index < snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((index - snapshot.index - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = term;
        snapshot
    }

    #[test]
    fn appends_replace_conflicting_suffixes_and_compaction_keeps_later_entries() {
        let mut log = MemoryLog::default();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        log.append(&[entry(3, 2), entry(4, 2)]);
        assert_eq!((log.term(3).unwrap(), log.last_index().unwrap()), (2, 4));
        log.compact_to(snapshot(2, 1));
        assert_eq!(log.first_index().unwrap(), 3);
        assert_eq!(log.term(2).unwrap(), 1);
        assert!(log.term(1).is_err());
        let got = log.entries(3, 5, None, GetEntriesContext::empty(false));
        assert_eq!(got.unwrap().len(), 2);
        assert!(log
            .entries(2, 5, None, GetEntriesContext::empty(false))
            .is_err());
        log.install_snapshot(snapshot(10, 3));
        assert_eq!(
            (log.first_index().unwrap(), log.last_index().unwrap()),
            (11, 10)
        );
        assert_eq!(log.hard_state().commit, 10);
        assert!(Storage::snapshot(&log, 11, 2).is_err());
    }
}
