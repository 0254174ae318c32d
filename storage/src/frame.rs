//! The on-disk frame around each record batch (layout in `storage/docs/format.md`).
//!
//! ```text
//! 0  magic u32 LE  "OXBF"          12 base_offset u64 LE
//! 4  frame_len u32 LE (header+payload)   20 last_offset_delta u32 LE
//! 8  crc u32 LE: crc32 (IEEE, crc32fast) of bytes 12..frame_len
//! 24 max_timestamp i64 LE          32 payload: the Kafka RecordBatch v2 bytes
//! ```
//! The frame CRC is what recovery trusts. Unlike the producer's CRC-32C it covers the base
//! offset, so a frame written for one offset cannot be resurrected at another.

/// Size of the fixed frame header.
pub const FRAME_HEADER_BYTES: usize = 32;
/// First four bytes of every frame ("OXBF" read as little-endian).
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"OXBF");

const _: () = assert!(
    FRAME_HEADER_BYTES.is_multiple_of(8),
    "header keeps the payload 8-byte aligned"
);

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Header plus payload, in bytes.
    pub frame_len: u32,
    /// CRC over bytes 12..frame_len.
    pub crc: u32,
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: u32,
    /// Largest record timestamp in the batch (ms).
    pub max_timestamp: i64,
}

impl FrameHeader {
    /// Offset after the batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.last_offset_delta as u64 + 1
    }
    /// Payload length in bytes.
    pub fn payload_len(&self) -> usize {
        self.frame_len as usize - FRAME_HEADER_BYTES
    }
}

/// What sits at a position of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameProbe {
    /// A frame whose header is sane; its CRC still needs checking against the payload.
    Header(FrameHeader),
    /// All-zero header: the end of written data (zero padding of the tail block).
    End,
    /// Fewer bytes than a header.
    Short,
    /// A header that cannot be a frame; the reason says why.
    Garbage(&'static str),
}

/// Encodes a frame header for `payload`, computing the CRC.
pub fn encode_header(
    base_offset: u64,
    last_offset_delta: u32,
    max_timestamp: i64,
    payload: &[u8],
) -> [u8; FRAME_HEADER_BYTES] {
    let frame_len = u32::try_from(FRAME_HEADER_BYTES + payload.len())
        .expect("frame larger than 4 GiB: batch_bytes_max must prevent this");
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&frame_len.to_le_bytes());
    header[12..20].copy_from_slice(&base_offset.to_le_bytes());
    header[20..24].copy_from_slice(&last_offset_delta.to_le_bytes());
    header[24..32].copy_from_slice(&max_timestamp.to_le_bytes());
    let crc = frame_crc(&header, payload);
    header[8..12].copy_from_slice(&crc.to_le_bytes());
    header
}

fn frame_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[12..FRAME_HEADER_BYTES]);
    hasher.update(payload);
    hasher.finalize()
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the header at the start of `bytes`. `frame_bytes_max` bounds the length field so a
/// corrupt header can never ask for an absurd read.
pub fn probe_header(bytes: &[u8], frame_bytes_max: u32) -> FrameProbe {
    if bytes.len() < FRAME_HEADER_BYTES {
        return if bytes.iter().all(|b| *b == 0) {
            FrameProbe::End
        } else {
            FrameProbe::Short
        };
    }
    let header = &bytes[..FRAME_HEADER_BYTES];
    if header.iter().all(|b| *b == 0) {
        return FrameProbe::End;
    }
    if le_u32(header, 0) != FRAME_MAGIC {
        return FrameProbe::Garbage("bad frame magic");
    }
    let frame_len = le_u32(header, 4);
    if (frame_len as usize) <= FRAME_HEADER_BYTES || frame_len > frame_bytes_max {
        return FrameProbe::Garbage("frame length out of bounds");
    }
    FrameProbe::Header(FrameHeader {
        frame_len,
        crc: le_u32(header, 8),
        base_offset: le_u64(header, 12),
        last_offset_delta: le_u32(header, 20),
        max_timestamp: le_u64(header, 24) as i64,
    })
}

/// Whether `frame` (header and payload, exactly `frame_len` bytes) matches its CRC.
pub fn crc_matches(header: &FrameHeader, frame: &[u8]) -> bool {
    frame.len() == header.frame_len as usize
        && frame_crc(&frame[..FRAME_HEADER_BYTES], &frame[FRAME_HEADER_BYTES..]) == header.crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_crc_covers_offset() {
        let payload = b"some batch bytes".to_vec();
        let header = encode_header(42, 3, 1_700, &payload);
        let frame = [&header[..], &payload].concat();
        let FrameProbe::Header(h) = probe_header(&frame, 1 << 20) else {
            panic!("not a header")
        };
        assert_eq!(
            (h.base_offset, h.last_offset_delta, h.max_timestamp),
            (42, 3, 1_700)
        );
        assert_eq!(h.next_offset(), 46);
        assert!(crc_matches(&h, &frame));
        let mut moved = frame.clone();
        moved[12] ^= 1; // a different base offset must not validate
        let FrameProbe::Header(h2) = probe_header(&moved, 1 << 20) else {
            panic!("not a header")
        };
        assert!(!crc_matches(&h2, &moved));
    }

    #[test]
    fn zeros_end_and_garbage_is_named() {
        assert_eq!(probe_header(&[0; 64], 1 << 20), FrameProbe::End);
        assert_eq!(probe_header(&[0; 5], 1 << 20), FrameProbe::End);
        assert_eq!(probe_header(&[1; 5], 1 << 20), FrameProbe::Short);
        assert!(matches!(
            probe_header(&[7; 64], 1 << 20),
            FrameProbe::Garbage(_)
        ));
        let mut huge = encode_header(0, 0, 0, b"x").to_vec();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            probe_header(&huge, 1 << 20),
            FrameProbe::Garbage(_)
        ));
    }
}
