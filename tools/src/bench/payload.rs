//! The bytes a bench producer sends: random (incompressible), or text that compresses the way
//! logs and JSON do, different for every message so that a codec cannot match one message
//! against the next copy of itself.

use super::meter::stamp;
use super::plan::PayloadKind;

/// Bytes of the text pool that messages are cut from (far larger than any batch, so two
/// messages of one batch rarely share text).
const TEXT_POOL_BYTES: usize = 8 << 20;
/// Words the text is drawn from.
const VOCABULARY_WORDS: usize = 2_000;

/// Produces each message's bytes, stamped with its intended send time.
pub struct Payloads {
    message: Vec<u8>,
    text_pool: Vec<u8>,
    rng: fastrand::Rng,
}

impl Payloads {
    /// Payloads of `size` bytes for producer `seed`.
    pub fn new(kind: PayloadKind, size: usize, seed: u64) -> Payloads {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut message = vec![0u8; size];
        let text_pool = match kind {
            PayloadKind::Random => {
                rng.fill(&mut message);
                Vec::new()
            }
            PayloadKind::Text => text(&mut rng, TEXT_POOL_BYTES.max(2 * size)),
        };
        Payloads {
            message,
            text_pool,
            rng,
        }
    }

    /// The next message.
    pub fn next(&mut self, intended_ns: u64) -> &[u8] {
        if !self.text_pool.is_empty() {
            let size = self.message.len();
            let at = self.rng.usize(..=self.text_pool.len() - size);
            self.message.copy_from_slice(&self.text_pool[at..at + size]);
        }
        stamp(&mut self.message, intended_ns);
        &self.message
    }
}

/// `bytes` of space-separated words from a random vocabulary, picked with a skew (a few words
/// are common, most are rare), as in natural text and field names.
fn text(rng: &mut fastrand::Rng, bytes: usize) -> Vec<u8> {
    let vocabulary: Vec<Vec<u8>> = (0..VOCABULARY_WORDS)
        .map(|_| {
            let len = rng.usize(2..12);
            (0..len).map(|_| rng.u8(b'a'..=b'z')).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(bytes + 16);
    while out.len() < bytes {
        // The product of two uniform picks favours small indexes: a Zipf-like skew.
        let word = rng.usize(..VOCABULARY_WORDS) * rng.usize(..VOCABULARY_WORDS) / VOCABULARY_WORDS;
        out.extend_from_slice(&vocabulary[word]);
        out.push(b' ');
    }
    out.truncate(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::Codec;

    #[test]
    fn text_payloads_differ_and_compress_like_text() {
        let mut payloads = Payloads::new(PayloadKind::Text, 1024, 7);
        let batch: Vec<u8> = (0..64).flat_map(|i| payloads.next(i).to_vec()).collect();
        let mut again = Payloads::new(PayloadKind::Text, 1024, 7);
        let first = again.next(0)[16..].to_vec();
        assert_ne!(first, again.next(1)[16..]);
        let ratio = |codec: Codec| batch.len() as f64 / codec.compress(None, &batch).len() as f64;
        let (lz4, zstd) = (ratio(Codec::Lz4), ratio(Codec::Zstd));
        assert!((1.3..4.0).contains(&lz4), "lz4 ratio {lz4}");
        assert!(zstd > lz4 && zstd < 6.0, "zstd ratio {zstd}");
        let mut random = Payloads::new(PayloadKind::Random, 1024, 7);
        let one = random.next(0).to_vec();
        assert!(Codec::Lz4.compress(None, &one[16..]).len() >= 1000);
    }
}
