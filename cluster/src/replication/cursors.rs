//! The subscription cursors of a partition, as its leader sends them to followers: every
//! reliable subscription's name and encoded cursor, whole, under a generation the leader
//! counts up with each change. A partition holds a handful of cursors of a few hundred bytes,
//! so a whole copy per change costs less than a replicated log of them would, and a follower
//! that applies one copy holds exactly the leader's state (deletions included).
//!
//! Layout, big-endian: generation u64, entry count u32, then per entry: name length u32,
//! name, value length u32, value.

use super::wire::WireError;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The cursors of one partition at one generation of its leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorSnapshot {
    /// The leader's count of cursor changes (from 1; 0 means "none held").
    pub generation: u64,
    /// Subscription name and encoded cursor, each once.
    pub entries: Vec<(Bytes, Bytes)>,
}

impl CursorSnapshot {
    /// Bytes the snapshot takes in a frame.
    pub fn encoded_len(&self) -> usize {
        12 + (self.entries.iter())
            .map(|(name, value)| 8 + name.len() + value.len())
            .sum::<usize>()
    }

    pub(super) fn encode_into(&self, out: &mut BytesMut) {
        out.put_u64(self.generation);
        out.put_u32(self.entries.len() as u32);
        for (name, value) in &self.entries {
            out.put_u32(name.len() as u32);
            out.put_slice(name);
            out.put_u32(value.len() as u32);
            out.put_slice(value);
        }
    }

    /// Takes a snapshot off the front of `buf`; every length is checked against what is left.
    pub(super) fn decode_from(buf: &mut Bytes) -> Result<CursorSnapshot, WireError> {
        let short = WireError("cursor snapshot shorter than its lengths");
        if buf.remaining() < 12 {
            return Err(short);
        }
        let generation = buf.get_u64();
        let count = buf.get_u32() as usize;
        // Each entry takes at least 8 bytes: a count beyond that is a lie, not an allocation.
        if count > buf.remaining() / 8 {
            return Err(short);
        }
        let mut entries = Vec::with_capacity(count);
        let field = |buf: &mut Bytes| {
            if buf.remaining() < 4 {
                return Err(short.clone());
            }
            let len = buf.get_u32() as usize;
            if buf.remaining() < len {
                return Err(short.clone());
            }
            Ok(buf.split_to(len))
        };
        for _ in 0..count {
            let name = field(buf)?;
            let value = field(buf)?;
            entries.push((name, value));
        }
        Ok(CursorSnapshot {
            generation,
            entries,
        })
    }
}
