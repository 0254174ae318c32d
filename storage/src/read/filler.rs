//! Written bytes into the read cache: the writer copies what it writes into the block of the
//! active segment being filled, and hands each block to the shard's cache once it is whole (or
//! once its segment is sealed), so readers a little behind the head read recent data from
//! memory, as a Kafka broker's readers do from the page cache. The tail cache still serves the
//! newest batches; this serves what falls out of it.

use super::ReadCache;
use bytes::BytesMut;

/// The block being filled: its segment's cache key, its number, and its bytes from the block's
/// start.
struct Filling {
    key: u64,
    index: u64,
    bytes: BytesMut,
}

/// The writer's block being filled. Only blocks whose every byte was seen written are handed
/// over: after a restart the writer starts at the next block boundary. Bytes are taken before
/// their write (while the writer still holds them) and blocks handed over only once it
/// succeeded ([`BlockFiller::commit`]).
#[derive(Default)]
pub struct BlockFiller {
    filling: Option<Filling>,
    /// Whole blocks waiting for their write to succeed.
    ready: Vec<(u64, u64, bytes::Bytes)>,
}

impl BlockFiller {
    /// `written` is being written at byte `position` of the segment `key` (blocks are
    /// `cache`'s).
    pub fn writing(&mut self, cache: &ReadCache, key: u64, position: u64, written: &[u8]) {
        let block_bytes = cache.config().block_bytes as u64;
        if !cache.config().cache_writes || cache.config().bytes_max == 0 || written.is_empty() {
            return;
        }
        let continues = self.filling.as_ref().is_some_and(|f| {
            f.key == key && f.index * block_bytes + f.bytes.len() as u64 == position
        });
        let mut rest = written;
        if !continues {
            // Start at the next block boundary (or here, if this is one).
            let boundary = position.next_multiple_of(block_bytes);
            let skip = (boundary - position).min(written.len() as u64) as usize;
            rest = &written[skip..];
            self.filling = None;
            if rest.is_empty() {
                return;
            }
            self.filling = Some(Filling {
                key,
                index: boundary / block_bytes,
                bytes: BytesMut::with_capacity(block_bytes as usize),
            });
        }
        while !rest.is_empty() {
            let filling = self.filling.as_mut().expect("set above");
            let room = block_bytes as usize - filling.bytes.len();
            let take = room.min(rest.len());
            filling.bytes.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if filling.bytes.len() == block_bytes as usize {
                let whole = std::mem::replace(
                    &mut filling.bytes,
                    BytesMut::with_capacity(block_bytes as usize),
                );
                self.ready.push((key, filling.index, whole.freeze()));
                filling.index += 1;
            }
        }
    }

    /// The write succeeded: its whole blocks go to `cache`.
    pub fn commit(&mut self, cache: &ReadCache) {
        for (key, index, bytes) in self.ready.drain(..) {
            cache.insert_written(key, index, bytes);
        }
    }

    /// The active segment was sealed: its last, partial block is final and goes to `cache`.
    pub fn sealed(&mut self, cache: &ReadCache) {
        if let Some(filling) = self.filling.take() {
            if !filling.bytes.is_empty() {
                (self.ready).push((filling.key, filling.index, filling.bytes.freeze()));
            }
        }
        self.commit(cache);
    }

    /// Bytes were cut off or a write failed: what is being filled may not be what the file
    /// holds.
    pub fn forget(&mut self) {
        self.filling = None;
        self.ready.clear();
    }
}
