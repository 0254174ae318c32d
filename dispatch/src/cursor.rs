//! The durable state of a reliable subscription on one partition, and its file format.
//!
//! Layout (little-endian): magic `OXBC`, u16 version, u8 type, u8 reserved, u64 mark-delete
//! offset, u32 range count, then `count` pairs of u64 (start, end) acknowledged above the
//! mark-delete offset, then a u32 CRC-32 (crc32fast) of everything before it. The file is
//! replaced atomically (write, fdatasync, rename), so a reader sees the old or the new one.

use oxbow_core::native::SubscriptionType;

const MAGIC: &[u8; 4] = b"OXBC";
const VERSION: u16 = 1;
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
}

/// Why stored bytes are not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor file is damaged: {0}")]
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
        let mut out = Vec::with_capacity(HEADER_BYTES + self.acked.len() * 16 + 4);
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
        if u16::from_le_bytes([body[4], body[5]]) != VERSION {
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
        let count = u32::from_le_bytes(body[16..20].try_into().expect("4 bytes"));
        if count > CURSOR_RANGES_MAX || body.len() != HEADER_BYTES + count as usize * 16 {
            return Err(CursorError("range count does not match the length"));
        }
        let acked = (0..count as usize)
            .map(|i| {
                (
                    u64_at(HEADER_BYTES + i * 16),
                    u64_at(HEADER_BYTES + i * 16 + 8),
                )
            })
            .collect::<Vec<_>>();
        if acked.iter().any(|&(s, e)| s < mark_delete || e <= s) {
            return Err(CursorError("range below the cursor or empty"));
        }
        Ok(CursorState {
            kind,
            mark_delete,
            acked,
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = CursorState::decode(&bytes);
        }
    }
}
