//! The durable state of a reliable subscription on one partition, and its file format.
//!
//! Layout (little-endian): magic `OXBC`, u16 version, u8 type, u8 reserved, u64 mark-delete
//! offset, u32 range count, then `count` pairs of u64 (start, end) acknowledged above the
//! mark-delete offset; version 2 adds a u32 skip count and that many pairs of u64 (first, last
//! offset) of batches an operator skipped; version 3 adds the dispatch rate limit, u64
//! messages and u64 bytes per second (0: none); then a u32 CRC-32 (crc32fast) of everything
//! before it. Version 1 (no skips) and 2 (no rate) files are still read. The file is replaced atomically (write,
//! fdatasync, rename), so a reader sees the old or the new one.

use crate::dispatch_rate::DispatchRate;
use crate::subscription::SKIPPED_KEPT;
use oxbow_core::native::SubscriptionType;

const MAGIC: &[u8; 4] = b"OXBC";
const VERSION: u16 = 3;
/// The first version, without skipped batches.
const VERSION_WITHOUT_SKIPS: u16 = 1;
/// The second, without the dispatch rate limit.
const VERSION_WITHOUT_RATE: u16 = 2;
const HEADER_BYTES: usize = 4 + 2 + 1 + 1 + 8 + 4;

/// Upper bound on stored ranges: a bad count cannot make a reader allocate without limit.
pub const CURSOR_RANGES_MAX: u32 = 1 << 24;

/// What a reliable subscription keeps across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorState {
    /// The subscription's type when it was written.
    pub kind: SubscriptionType,
    /// Every offset below this one is acknowledged.
    pub mark_delete: u64,
    /// Offsets acknowledged above `mark_delete`, as half-open ranges.
    pub acked: Vec<(u64, u64)>,
    /// Undecodable batches an operator skipped (first and last offset), newest last.
    pub skipped: Vec<(u64, u64)>,
    /// The subscription's dispatch rate limit.
    pub dispatch_rate: DispatchRate,
}

/// Why stored bytes are not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored cursor is damaged: {0}")]
pub struct CursorError(pub &'static str);

fn kind_code(kind: SubscriptionType) -> u8 {
    match kind {
        SubscriptionType::Exclusive => 0,
        SubscriptionType::Shared => 1,
        SubscriptionType::Failover => 2,
        SubscriptionType::KeyShared => 3,
    }
}

impl CursorState {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let pairs = self.acked.len() + self.skipped.len();
        let mut out = Vec::with_capacity(HEADER_BYTES + pairs * 16 + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(kind_code(self.kind));
        out.push(0);
        out.extend_from_slice(&self.mark_delete.to_le_bytes());
        out.extend_from_slice(&(self.acked.len() as u32).to_le_bytes());
        for &(start, end) in &self.acked {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&(self.skipped.len() as u32).to_le_bytes());
        for &(first, last) in &self.skipped {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&last.to_le_bytes());
        }
        out.extend_from_slice(&self.dispatch_rate.messages_per_second.to_le_bytes());
        out.extend_from_slice(&self.dispatch_rate.bytes_per_second.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a file's bytes back, checking length, magic, version and checksum.
    pub fn decode(bytes: &[u8]) -> Result<CursorState, CursorError> {
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(CursorError("shorter than its header"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(CursorError("checksum mismatch"));
        }
        if &body[..4] != MAGIC {
            return Err(CursorError("bad magic"));
        }
        let version = u16::from_le_bytes([body[4], body[5]]);
        if !(VERSION_WITHOUT_SKIPS..=VERSION).contains(&version) {
            return Err(CursorError("unknown version"));
        }
        let kind = match body[6] {
            0 => SubscriptionType::Exclusive,
            1 => SubscriptionType::Shared,
            2 => SubscriptionType::Failover,
            3 => SubscriptionType::KeyShared,
            _ => return Err(CursorError("unknown subscription type")),
        };
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let mark_delete = u64_at(8);
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        let pairs_at = |at: usize, count: u32| {
            (0..count as usize)
                .map(|i| (u64_at(at + i * 16), u64_at(at + i * 16 + 8)))
                .collect::<Vec<_>>()
        };
        let count = u32_at(16);
        let acked_end = HEADER_BYTES + count as usize * 16;
        let skips_bytes = if version >= VERSION_WITHOUT_RATE {
            4
        } else {
            0
        };
        if count > CURSOR_RANGES_MAX || body.len() < acked_end + skips_bytes {
            return Err(CursorError("range count does not match the length"));
        }
        let acked = pairs_at(HEADER_BYTES, count);
        if acked.iter().any(|&(s, e)| s < mark_delete || e <= s) {
            return Err(CursorError("range below the cursor or empty"));
        }
        let rate_bytes = if version == VERSION { 16 } else { 0 };
        let mut dispatch_rate = DispatchRate::default();
        let skipped = if version >= VERSION_WITHOUT_RATE {
            let skips = u32_at(acked_end);
            let skips_end = acked_end + 4 + skips as usize * 16;
            if skips as usize > SKIPPED_KEPT || body.len() != skips_end + rate_bytes {
                return Err(CursorError("skip count does not match the length"));
            }
            if version == VERSION {
                dispatch_rate.messages_per_second = u64_at(skips_end);
                dispatch_rate.bytes_per_second = u64_at(skips_end + 8);
            }
            pairs_at(acked_end + 4, skips)
        } else if body.len() != acked_end {
            return Err(CursorError("range count does not match the length"));
        } else {
            Vec::new()
        };
        Ok(CursorState {
            kind,
            mark_delete,
            acked,
            skipped,
            dispatch_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let state = CursorState {
            kind: SubscriptionType::KeyShared,
            mark_delete: 1_000,
            acked: vec![(1_002, 1_005), (2_000, 2_001)],
            skipped: vec![(900, 909)],
            dispatch_rate: DispatchRate {
                messages_per_second: 2_000,
                bytes_per_second: 0,
            },
        };
        let bytes = state.encode();
        assert_eq!(CursorState::decode(&bytes).unwrap(), state);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(CursorState::decode(&damaged).is_err(), "flip at {at}");
        }
        assert!(CursorState::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn version_1_files_are_read_without_skips() {
        // Written by the previous release: magic, version 1, Shared, mark-delete 7, no ranges.
        let mut v1 = b"OXBC".to_vec();
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&[1, 0]);
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let state = CursorState::decode(&v1).unwrap();
        assert_eq!(
            (state.kind, state.mark_delete),
            (SubscriptionType::Shared, 7)
        );
        assert!(state.acked.is_empty() && state.skipped.is_empty());
    }

    #[test]
    fn version_2_files_are_read_without_a_rate() {
        let mut v2 = b"OXBC".to_vec();
        v2.extend_from_slice(&2u16.to_le_bytes());
        v2.extend_from_slice(&[0, 0]);
        v2.extend_from_slice(&7u64.to_le_bytes());
        v2.extend_from_slice(&0u32.to_le_bytes());
        v2.extend_from_slice(&1u32.to_le_bytes());
        v2.extend_from_slice(&3u64.to_le_bytes());
        v2.extend_from_slice(&4u64.to_le_bytes());
        let crc = crc32fast::hash(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        let state = CursorState::decode(&v2).unwrap();
        assert_eq!(state.skipped, [(3, 4)]);
        assert!(state.dispatch_rate.is_unlimited());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = CursorState::decode(&bytes);
        }
    }
}
