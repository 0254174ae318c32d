//! Reads of segment bytes that are not in a partition's tail cache: through the shard's
//! [`ReadCache`] of aligned blocks, with read-ahead for readers that [`ReadStreams`] finds to
//! be sequential.

mod cache;
mod filler;
mod streams;

pub use cache::{
    configure_shard, new_cache_key, shard_cache, shard_stats, ReadCache, ReadCacheConfig,
    ReadCacheStats,
};
pub use filler::BlockFiller;
pub use streams::{ReadStreams, StreamEnd};

use crate::io::SegmentFile;
use crate::segment::FrameSource;
use bytes::Bytes;
use std::future::Future;
use std::io;

/// A segment read through a shard's cache.
pub struct CachedSegment<'a> {
    /// The shard's cache.
    pub cache: &'a ReadCache,
    /// The segment's file.
    pub file: &'a SegmentFile,
    /// The segment's cache key.
    pub key: u64,
    /// Where its written bytes end.
    pub limit: u64,
}

impl FrameSource for CachedSegment<'_> {
    fn read(
        &self,
        pos: u64,
        min_len: usize,
        _len: usize,
    ) -> impl Future<Output = io::Result<Bytes>> {
        self.cache
            .read(self.file, self.key, pos, min_len, self.limit)
    }
}

#[cfg(test)]
mod tests;
