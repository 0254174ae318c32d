//! The four compression codecs of Kafka record batches, byte-compatible with Kafka's clients.
//!
//! A compressed batch keeps its 61-byte header in the clear and compresses only the records
//! section; the codec is in bits 0-2 of the batch attributes. The framing each codec uses is
//! the one Kafka's Java client writes, because every client reads it:
//! - gzip: a gzip stream (RFC 1952);
//! - snappy: xerial's `SnappyOutputStream` framing (an 8-byte magic, two version words, then
//!   blocks of `[u32 length][raw snappy]`). Raw snappy without framing (what librdkafka
//!   writes) is read too;
//! - lz4: the LZ4 frame format with independent 64 KiB blocks (KIP-57's correct header
//!   checksum). Written by the reference C library (what Kafka's clients write; lz4_flex's own
//!   encoder produced frames that decode 3x slower, measured: 0.55 against 1.6 GB/s), read by
//!   lz4_flex, in safe Rust, since what a broker decodes comes from strangers;
//! - zstd: a zstd frame.
//!
//! Decompression is bounded: every decoder stops once the output would pass the caller's limit
//! (`batch_decompressed_bytes_max`), and the zstd window is capped by the same limit, so a
//! decompression bomb costs at most that much memory and is refused.

use std::io::{Read, Write};

/// How a batch's records section is compressed (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Not compressed.
    None,
    /// gzip (deflate in a gzip stream).
    Gzip,
    /// Snappy, in xerial's framing.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// Why a records section could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// Attribute bits name a codec that does not exist (5, 6 or 7).
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    /// The decompressed records would exceed the limit.
    #[error("decompressed records exceed {limit} bytes (batch_decompressed_bytes_max)")]
    TooLarge {
        /// The limit that was reached.
        limit: u64,
    },
    /// The compressed bytes are not valid for their codec.
    #[error("{codec} data is corrupt: {reason}")]
    Corrupt {
        /// Codec name.
        codec: &'static str,
        /// What the decoder said.
        reason: String,
    },
}

/// xerial snappy-java's stream header: magic, version 1, compatible version 1.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = 16;
/// Uncompressed bytes per xerial block (snappy-java's default block size).
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
/// Largest zstd window accepted (128 MiB, zstd's own default ceiling).
const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Smallest zstd window cap (8 MiB): streaming encoders (Java's zstd-jni) do not know the
/// content size and use their level's window, up to 8 MiB for levels 1-19, whatever the data.
const ZSTD_WINDOW_LOG_MIN: u32 = 23;

impl Codec {
    /// Every codec, in attribute order.
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    /// The codec named by a batch's attribute bits.
    pub fn from_attributes(attributes: i16) -> Result<Codec, CompressionError> {
        let bits = (attributes & 0x7) as u8;
        Codec::ALL
            .get(bits as usize)
            .copied()
            .ok_or(CompressionError::UnknownCodec(bits))
    }

    /// The attribute bits of this codec.
    pub fn attribute_bits(self) -> i16 {
        self as i16
    }

    /// The name Kafka uses for it (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// Levels this codec accepts, if it has levels at all (Kafka's ranges; lz4 from 3 on is
    /// LZ4-HC).
    pub fn levels(self) -> Option<std::ops::RangeInclusive<i32>> {
        match self {
            Codec::Gzip => Some(1..=9),
            Codec::Lz4 => Some(1..=17),
            Codec::Zstd => Some(1..=22),
            Codec::None | Codec::Snappy => None,
        }
    }

    /// Checks a requested level against [`Codec::levels`].
    pub fn check_level(self, level: Option<i32>) -> Result<(), String> {
        match (level, self.levels()) {
            (None, _) => Ok(()),
            (Some(level), Some(levels)) if levels.contains(&level) => Ok(()),
            (Some(level), Some(levels)) => Err(format!(
                "{} level {level} is outside {}..={}",
                self.name(),
                levels.start(),
                levels.end()
            )),
            (Some(_), None) => Err(format!("{} has no compression levels", self.name())),
        }
    }

    /// Compresses `raw` the way Kafka's clients do. `level` must pass [`Codec::check_level`];
    /// `None` is the codec's default.
    pub fn compress(self, level: Option<i32>, raw: &[u8]) -> Vec<u8> {
        match self {
            Codec::None => raw.to_vec(),
            Codec::Gzip => {
                let level = flate2::Compression::new(level.unwrap_or(6) as u32);
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
                encoder.write_all(raw).expect("writing to memory");
                encoder.finish().expect("writing to memory")
            }
            Codec::Snappy => snappy_xerial(raw),
            Codec::Lz4 => {
                let mut encoder = lz4::EncoderBuilder::new()
                    .block_size(lz4::BlockSize::Max64KB)
                    .block_mode(lz4::BlockMode::Independent)
                    .checksum(lz4::ContentChecksum::NoChecksum)
                    .level(level.unwrap_or(0) as u32)
                    .build(Vec::with_capacity(raw.len() / 2 + 64))
                    .expect("an lz4 context for valid settings");
                encoder.write_all(raw).expect("writing to memory");
                let (out, finished) = encoder.finish();
                finished.expect("writing to memory");
                out
            }
            Codec::Zstd => zstd::bulk::compress(raw, level.unwrap_or(3))
                .expect("zstd compresses any input at a valid level"),
        }
    }

    /// Decompresses `compressed`, refusing to produce more than `limit` bytes.
    pub fn decompress(self, compressed: &[u8], limit: u64) -> Result<Vec<u8>, CompressionError> {
        let corrupt = |e: std::io::Error| CompressionError::Corrupt {
            codec: self.name(),
            reason: e.to_string(),
        };
        match self {
            Codec::None => bounded(compressed, limit, corrupt),
            Codec::Gzip => bounded(flate2::read::GzDecoder::new(compressed), limit, corrupt),
            Codec::Snappy => snappy_decompress(compressed, limit),
            Codec::Lz4 => bounded(
                lz4_flex::frame::FrameDecoder::new(compressed),
                limit,
                corrupt,
            ),
            Codec::Zstd => {
                // A frame that declares its size is refused before anything is allocated.
                if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(compressed) {
                    if size > limit {
                        return Err(CompressionError::TooLarge { limit });
                    }
                }
                let mut decoder =
                    zstd::stream::read::Decoder::with_buffer(compressed).map_err(corrupt)?;
                decoder
                    .window_log_max(zstd_window_log_max(limit))
                    .map_err(corrupt)?;
                bounded(decoder, limit, |e| {
                    // zstd's own words for a window above the cap: the frame needs more memory
                    // than the limit allows, which is the limit's refusal, not corruption.
                    if e.to_string().contains("too much memory") {
                        CompressionError::TooLarge { limit }
                    } else {
                        corrupt(e)
                    }
                })
            }
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Codec {
    type Err = String;

    fn from_str(name: &str) -> Result<Codec, String> {
        Codec::ALL
            .into_iter()
            .find(|codec| codec.name() == name)
            .ok_or_else(|| format!("unknown compression {name:?}: none, gzip, snappy, lz4 or zstd"))
    }
}

/// The smallest window that can hold `limit` bytes (at least what streaming encoders use): a
/// legitimate frame never needs a window larger than its content, and a hostile one cannot make
/// the decoder allocate more.
fn zstd_window_log_max(limit: u64) -> u32 {
    let needed = 64 - limit.max(1).saturating_sub(1).leading_zeros();
    needed.clamp(ZSTD_WINDOW_LOG_MIN, ZSTD_WINDOW_LOG_MAX)
}

/// Reads `reader` to its end, failing once more than `limit` bytes come out.
fn bounded(
    reader: impl Read,
    limit: u64,
    corrupt: impl Fn(std::io::Error) -> CompressionError,
) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() as u64 > limit {
        return Err(CompressionError::TooLarge { limit });
    }
    Ok(out)
}

fn snappy_xerial(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + raw.len() / 2 + 64);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for block in raw.chunks(XERIAL_BLOCK_BYTES) {
        let compressed = encoder
            .compress_vec(block)
            .expect("a block below snappy's maximum compresses");
        out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    out
}

fn snappy_decompress(compressed: &[u8], limit: u64) -> Result<Vec<u8>, CompressionError> {
    let corrupt = |reason: String| CompressionError::Corrupt {
        codec: "snappy",
        reason,
    };
    let mut decoder = snap::raw::Decoder::new();
    let mut block = |bytes: &[u8], out: &mut Vec<u8>| -> Result<(), CompressionError> {
        // The length is read from the block's own header before anything is allocated.
        let len = snap::raw::decompress_len(bytes).map_err(|e| corrupt(e.to_string()))?;
        if (out.len() + len) as u64 > limit {
            return Err(CompressionError::TooLarge { limit });
        }
        let at = out.len();
        out.resize(at + len, 0);
        decoder
            .decompress(bytes, &mut out[at..])
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(())
    };
    let mut out = Vec::new();
    if compressed.len() < XERIAL_HEADER_BYTES || compressed[..8] != XERIAL_MAGIC {
        block(compressed, &mut out)?;
        return Ok(out);
    }
    let mut rest = &compressed[XERIAL_HEADER_BYTES..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(corrupt("xerial block length cut short".into()));
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        rest = &rest[4..];
        if len > rest.len() {
            return Err(corrupt(format!(
                "xerial block of {len} bytes with {} left",
                rest.len()
            )));
        }
        block(&rest[..len], &mut out)?;
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let raw = sample();
        for codec in Codec::ALL {
            let compressed = codec.compress(None, &raw);
            if codec != Codec::None {
                assert!(compressed.len() < raw.len() / 2, "{codec} compresses");
            }
            assert_eq!(
                codec.decompress(&compressed, raw.len() as u64).unwrap(),
                raw
            );
        }
        for level in [1, 9] {
            let gz = Codec::Gzip.compress(Some(level), &raw);
            assert_eq!(Codec::Gzip.decompress(&gz, u64::MAX).unwrap(), raw);
        }
        let zstd = Codec::Zstd.compress(Some(19), &raw);
        assert_eq!(Codec::Zstd.decompress(&zstd, u64::MAX).unwrap(), raw);
        let hc = Codec::Lz4.compress(Some(9), &raw);
        assert_eq!(Codec::Lz4.decompress(&hc, u64::MAX).unwrap(), raw);
    }

    #[test]
    fn output_past_the_limit_is_refused() {
        // A bomb: 64 MiB of zeros compresses to almost nothing.
        let zeros = vec![0u8; 64 << 20];
        for codec in Codec::ALL {
            let bomb = codec.compress(None, &zeros);
            assert_eq!(
                codec.decompress(&bomb, 1 << 20),
                Err(CompressionError::TooLarge { limit: 1 << 20 }),
                "{codec}"
            );
        }
    }

    #[test]
    fn zstd_frames_without_a_content_size_are_read() {
        // What a streaming encoder (Kafka's Java client) writes: no size in the frame header.
        let raw = sample();
        for level in [3, 19] {
            let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
            encoder.write_all(&raw).unwrap();
            let frame = encoder.finish().unwrap();
            assert!(matches!(
                zstd::zstd_safe::get_frame_content_size(&frame),
                Ok(None)
            ));
            assert_eq!(
                Codec::Zstd.decompress(&frame, raw.len() as u64).unwrap(),
                raw
            );
        }
    }

    #[test]
    fn raw_snappy_without_framing_is_read_too() {
        let raw = sample();
        let unframed = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert_eq!(Codec::Snappy.decompress(&unframed, u64::MAX).unwrap(), raw);
    }

    #[test]
    fn codecs_have_kafka_names_and_attribute_bits() {
        for (bits, codec) in Codec::ALL.into_iter().enumerate() {
            assert_eq!(Codec::from_attributes(bits as i16 | 0x10), Ok(codec));
            assert_eq!(codec.attribute_bits(), bits as i16);
            assert_eq!(codec.name().parse::<Codec>(), Ok(codec));
        }
        assert_eq!(
            Codec::from_attributes(5),
            Err(CompressionError::UnknownCodec(5))
        );
        assert!("brotli".parse::<Codec>().is_err());
        assert!(Codec::Zstd.check_level(Some(22)).is_ok());
        assert!(Codec::Zstd.check_level(Some(23)).is_err());
        assert!(Codec::Snappy.check_level(Some(1)).is_err());
        assert!(Codec::Lz4.check_level(Some(18)).is_err());
        assert!(Codec::Lz4.check_level(None).is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_nor_pass_the_limit(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            codec in 0usize..5,
        ) {
            let codec = Codec::ALL[codec];
            if let Ok(out) = codec.decompress(&bytes, 4096) {
                prop_assert!(out.len() <= 4096);
            }
            // The same bytes behind a valid xerial header exercise the framing.
            let mut framed = XERIAL_MAGIC.to_vec();
            framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
            framed.extend_from_slice(&bytes);
            if let Ok(out) = Codec::Snappy.decompress(&framed, 4096) {
                prop_assert!(out.len() <= 4096);
            }
        }
    }
}
