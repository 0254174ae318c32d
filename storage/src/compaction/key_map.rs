//! The newest offset of each key in the dirty part of a log, within a memory budget.
//!
//! Keys are held whole, not hashed: a hash collision would make the cleaner drop the newest
//! record of a key for another key's, silently. The budget counts each key's bytes plus
//! [`ENTRY_OVERHEAD_BYTES`].

use bytes::Bytes;
use std::collections::HashMap;

/// What an entry costs besides its key: the map's slot, the offset and the key's handle.
pub(crate) const ENTRY_OVERHEAD_BYTES: u64 = 64;

pub(crate) struct KeyMap {
    newest: HashMap<Bytes, u64>,
    bytes: u64,
    bytes_max: u64,
}

impl KeyMap {
    pub(crate) fn new(bytes_max: u64) -> KeyMap {
        KeyMap {
            newest: HashMap::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Records `offset` as the newest of `key` (offsets come in increasing order). `false`
    /// when the key is new and the budget has no room for it: nothing is recorded.
    pub(crate) fn insert(&mut self, key: &[u8], offset: u64) -> bool {
        if let Some(newest) = self.newest.get_mut(key) {
            *newest = offset;
            return true;
        }
        let cost = key.len() as u64 + ENTRY_OVERHEAD_BYTES;
        if self.bytes + cost > self.bytes_max {
            return false;
        }
        self.bytes += cost;
        self.newest.insert(Bytes::copy_from_slice(key), offset);
        true
    }

    /// The newest offset recorded for `key`.
    pub(crate) fn newest(&self, key: &[u8]) -> Option<u64> {
        self.newest.get(key).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.newest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_offset_and_refuses_new_keys_past_its_budget() {
        let mut map = KeyMap::new(2 * (ENTRY_OVERHEAD_BYTES + 1));
        assert!(map.insert(b"a", 1));
        assert!(map.insert(b"b", 2));
        assert!(map.insert(b"a", 3), "a known key costs nothing more");
        assert!(!map.insert(b"c", 4));
        assert_eq!(
            (map.newest(b"a"), map.newest(b"b"), map.newest(b"c")),
            (Some(3), Some(2), None)
        );
        assert_eq!(map.len(), 2);
    }
}
