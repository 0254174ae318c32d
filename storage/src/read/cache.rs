//! A shard's cache of segment bytes read from disk, in aligned blocks that every reader of every
//! partition on the shard shares.
//!
//! Direct I/O bypasses the page cache, so without this every reader that is not at a partition's
//! head (where the tail cache serves it) reads from the disk, and several readers of one
//! partition read the same bytes several times. Blocks are `block_bytes` long and aligned in
//! their segment, so one large DMA read fills one; a block at a segment's written end is shorter
//! and is read again once a reader needs the bytes written after it.
//!
//! Eviction is S3-FIFO (Yang et al., SOSP 2023): a block enters a small FIFO and moves to the
//! main FIFO only if it is used again before it leaves; blocks evicted from the small FIFO are
//! remembered (ghosts) so that one read again soon enters main directly. A catch-up reader that
//! streams through a partition uses each block once, so its blocks pass through the small FIFO
//! without flushing what several readers share. A reader continuing where it stopped in a block
//! (the next fetch of the same consumer) is not a reuse, nor is the first read of a block that
//! read-ahead brought in.
//!
//! Loads are deduplicated: a reader that needs a block another task is loading waits for that
//! read instead of issuing its own; and bounded: at most half the budget's worth of blocks is
//! read at once.

use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::io::SegmentFile;
pub use oxbow_core::config::ReadCacheConfig;

/// Counters of a shard's read cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCacheStats {
    /// Block reads served from memory (including ones that waited for a load in flight).
    pub hits: u64,
    /// Block reads that went to the disk.
    pub misses: u64,
    /// Blocks loaded ahead of a sequential reader.
    pub read_ahead_blocks: u64,
    /// Blocks read ahead and evicted before anyone read them.
    pub read_ahead_unused: u64,
    /// Blocks evicted.
    pub evictions: u64,
    /// Bytes read from the disk into the cache.
    pub disk_bytes: u64,
    /// Blocks the writers handed over as they wrote them.
    pub written_blocks: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// The budget.
    pub bytes_max: u64,
}

/// Share of the budget the small FIFO keeps once the main one is full: readers of one block
/// further apart than this (several subscriptions of a partition at different lags) read it
/// twice. S3-FIFO's 10% suits web caches; here 4 native subscriptions catching up together read
/// 2.4 times the bytes at 10%, and a streaming reader still cannot push out more than the
/// small FIFO's share of what the others reuse.
const SMALL_FIFO_PERCENT: u64 = 50;

/// One block of one segment: the segment's cache key and the block's number in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BlockId {
    key: u64,
    index: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

struct Block {
    /// From the block's start; shorter than a block at a segment's written end.
    bytes: Bytes,
    queue: Queue,
    /// Reuses seen since it entered its queue (S3-FIFO's frequency, capped at 3).
    reuses: u8,
    /// Where in the block the last read of it ended.
    last_read_end: usize,
    /// Loaded by read-ahead and not read yet.
    unread_ahead: bool,
}

/// A block being read from the disk; other readers of it wait here.
#[derive(Default)]
struct Loading {
    /// `Some` once the read is over: its bytes, or `None` if it failed or was abandoned (the
    /// waiters then read for themselves).
    outcome: RefCell<Option<Option<Bytes>>>,
    waiters: RefCell<Vec<Waker>>,
}

impl Loading {
    fn finish(&self, outcome: Option<Bytes>) {
        self.outcome.borrow_mut().get_or_insert(outcome);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    async fn outcome(&self) -> Option<Bytes> {
        std::future::poll_fn(|cx| match &*self.outcome.borrow() {
            Some(outcome) => Poll::Ready(outcome.clone()),
            None => {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

#[derive(Default)]
struct State {
    blocks: HashMap<BlockId, Block>,
    small: VecDeque<BlockId>,
    main: VecDeque<BlockId>,
    small_bytes: u64,
    bytes: u64,
    /// Blocks recently evicted from the small FIFO, oldest first.
    ghosts: VecDeque<BlockId>,
    ghost_set: HashSet<BlockId>,
    loading: HashMap<BlockId, Rc<Loading>>,
    /// Bytes of read-ahead loading or loaded and unread: read-ahead stops at half the budget,
    /// so it can never push out what readers are using.
    ahead_bytes: u64,
    stats: ReadCacheStats,
}

/// A shard's read cache. Lives on the shard (not `Send`); see the module documentation.
pub struct ReadCache {
    config: ReadCacheConfig,
    state: RefCell<State>,
    /// Blocks being read from disk at once: their buffers are memory beyond the budget, so
    /// many readers missing together (a fan-out at different offsets) queue here instead.
    loads: glommio::sync::Semaphore,
}

thread_local! {
    static SHARD_CACHE: RefCell<Option<Rc<ReadCache>>> = const { RefCell::new(None) };
    static NEXT_KEY: Cell<u64> = const { Cell::new(1) };
}

/// Sets this shard's read cache (once per shard thread, before partitions open; later calls
/// replace it for partitions opened afterwards).
pub fn configure_shard(config: ReadCacheConfig) {
    SHARD_CACHE.with(|c| *c.borrow_mut() = Some(Rc::new(ReadCache::new(config))));
}

/// This shard's read cache (with default settings if none was configured).
pub fn shard_cache() -> Rc<ReadCache> {
    SHARD_CACHE.with(|c| {
        c.borrow_mut()
            .get_or_insert_with(|| Rc::new(ReadCache::new(ReadCacheConfig::default())))
            .clone()
    })
}

/// This shard's read cache counters, if it has one.
pub fn shard_stats() -> ReadCacheStats {
    SHARD_CACHE.with(|c| c.borrow().as_ref().map(|c| c.stats()).unwrap_or_default())
}

/// A new cache key: a segment gets one when it is opened and a new one when it is truncated,
/// so blocks holding bytes that no longer exist are never served. Unique per thread, and
/// partitions never move between threads.
pub fn new_cache_key() -> u64 {
    NEXT_KEY.with(|k| {
        let key = k.get();
        k.set(key + 1);
        key
    })
}

impl ReadCache {
    /// An empty cache.
    pub fn new(config: ReadCacheConfig) -> ReadCache {
        assert!(config.block_bytes > 0, "a block holds bytes");
        let loads = (config.bytes_max / 2 / config.block_bytes as u64).max(1);
        ReadCache {
            config,
            state: RefCell::default(),
            loads: glommio::sync::Semaphore::new(loads),
        }
    }

    /// Its settings.
    pub fn config(&self) -> ReadCacheConfig {
        self.config
    }

    /// Its counters.
    pub fn stats(&self) -> ReadCacheStats {
        let state = self.state.borrow();
        ReadCacheStats {
            bytes: state.bytes,
            bytes_max: self.config.bytes_max,
            ..state.stats
        }
    }

    fn block_bytes(&self) -> u64 {
        self.config.block_bytes as u64
    }

    /// At least `min_len` bytes of the segment `key` (whose file is `file` and whose written
    /// bytes end at `limit`) starting at `pos`, or fewer where `limit` comes first; usually the
    /// rest of the block holding `pos`, without a copy. Only bytes that span blocks are copied.
    pub async fn read(
        &self,
        file: &SegmentFile,
        key: u64,
        pos: u64,
        min_len: usize,
        limit: u64,
    ) -> io::Result<Bytes> {
        let want_end = limit.min(pos + min_len as u64);
        let first = self.block_from(file, key, pos, want_end, limit).await?;
        if pos + first.len() as u64 >= want_end {
            return Ok(first);
        }
        let mut joined = BytesMut::with_capacity((want_end - pos) as usize);
        joined.extend_from_slice(&first);
        while pos + (joined.len() as u64) < want_end {
            let at = pos + joined.len() as u64;
            let next = self.block_from(file, key, at, want_end, limit).await?;
            if next.is_empty() {
                break;
            }
            joined.extend_from_slice(&next);
        }
        Ok(joined.freeze())
    }

    /// The bytes of the block holding `pos`, from `pos` to the block's end (or `limit`), holding
    /// at least up to `min(want_end, block end)`.
    async fn block_from(
        &self,
        file: &SegmentFile,
        key: u64,
        pos: u64,
        want_end: u64,
        limit: u64,
    ) -> io::Result<Bytes> {
        let block_bytes = self.block_bytes();
        let id = BlockId {
            key,
            index: pos / block_bytes,
        };
        let start = id.index * block_bytes;
        let block_end = (start + block_bytes).min(limit);
        let need = (want_end.min(block_end) - start) as usize;
        let from = (pos - start) as usize;
        let bytes = self.block(file, id, need, block_end, Use::Read).await?;
        // Never past `limit`, though the block may hold more.
        let until = bytes.len().min((block_end - start) as usize).max(from);
        let read_end = want_end.min(start + until as u64) - start;
        self.state.borrow_mut().on_read(id, from, read_end as usize);
        Ok(bytes.slice(from..until))
    }

    /// Loads the blocks of segment `key` (whose written bytes end at `limit`) holding bytes
    /// `from..to` in the background, whole, as far as the read-ahead budget (half the cache)
    /// allows. Blocks already held or loading are skipped.
    pub fn read_ahead(
        self: &Rc<Self>,
        file: &SegmentFile,
        key: u64,
        from: u64,
        to: u64,
        limit: u64,
    ) {
        let block_bytes = self.block_bytes();
        if self.config.read_ahead_blocks == 0 {
            return;
        }
        for index in from / block_bytes..to.min(limit).div_ceil(block_bytes) {
            let id = BlockId { key, index };
            let block_end = ((index + 1) * block_bytes).min(limit);
            if !self.worth_reading_ahead(id, block_end) {
                continue;
            }
            let cache = self.clone();
            let file = file.clone();
            glommio::spawn_local(async move {
                // Checked again: a reader may have started the read since.
                if cache.worth_reading_ahead(id, block_end) {
                    // A failure shows when a reader reads the block itself.
                    let _ = cache.load(&file, id, block_end, Use::Ahead).await;
                }
            })
            .detach();
        }
    }

    fn worth_reading_ahead(&self, id: BlockId, block_end: u64) -> bool {
        let len = block_end - id.index * self.block_bytes();
        let state = self.state.borrow();
        let held = (state.blocks.get(&id)).is_some_and(|b| b.bytes.len() as u64 >= len);
        !held
            && !state.loading.contains_key(&id)
            && state.ahead_bytes + len <= self.config.bytes_max / 2
    }

    /// Block `index` of segment `key` as its writer wrote it: whole, or the last one of a
    /// sealed segment.
    pub fn insert_written(&self, key: u64, index: u64, bytes: Bytes) {
        let mut state = self.state.borrow_mut();
        state.stats.written_blocks += 1;
        state.insert(BlockId { key, index }, bytes, false, self.config);
    }

    /// The block `id` holding at least `need` bytes, from memory, from a load in flight, or
    /// from the disk (reading up to `block_end`).
    async fn block(
        &self,
        file: &SegmentFile,
        id: BlockId,
        need: usize,
        block_end: u64,
        purpose: Use,
    ) -> io::Result<Bytes> {
        loop {
            let loading = {
                let mut state = self.state.borrow_mut();
                if let Some(block) = state.blocks.get(&id) {
                    if block.bytes.len() >= need {
                        let bytes = block.bytes.clone();
                        if purpose == Use::Read {
                            state.stats.hits += 1;
                        }
                        return Ok(bytes);
                    }
                }
                state.loading.get(&id).cloned()
            };
            match loading {
                Some(loading) => match loading.outcome().await {
                    Some(bytes) if bytes.len() >= need => {
                        if purpose == Use::Read {
                            self.state.borrow_mut().stats.hits += 1;
                        }
                        return Ok(bytes);
                    }
                    _ => continue,
                },
                None => return self.load(file, id, block_end, purpose).await,
            }
        }
    }

    async fn load(
        &self,
        file: &SegmentFile,
        id: BlockId,
        block_end: u64,
        purpose: Use,
    ) -> io::Result<Bytes> {
        let start = id.index * self.block_bytes();
        let len = block_end - start;
        let loading = Rc::new(Loading::default());
        {
            let mut state = self.state.borrow_mut();
            state.loading.insert(id, loading.clone());
            if purpose == Use::Ahead {
                state.ahead_bytes += len;
                state.stats.read_ahead_blocks += 1;
            }
        }
        // Wakes the waiters even if this future is dropped mid-read (its reader went away).
        let guard = LoadGuard {
            cache: self,
            id,
            loading,
        };
        let permit = self.loads.acquire_permit(1).await;
        let read = file.read_at(start, len as usize).await;
        drop(permit);
        let mut state = self.state.borrow_mut();
        state.loading.remove(&id);
        if purpose == Use::Ahead {
            // No longer in flight; held and unread, it counts again below.
            state.ahead_bytes -= len;
        }
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                guard.loading.finish(None);
                return Err(e);
            }
        };
        state.stats.disk_bytes += bytes.len() as u64;
        if purpose == Use::Read {
            state.stats.misses += 1;
        }
        state.insert(id, bytes.clone(), purpose == Use::Ahead, self.config);
        guard.loading.finish(Some(bytes.clone()));
        Ok(bytes)
    }
}

/// Why a block is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// A reader needs it now.
    Read,
    /// Read-ahead: a reader will likely need it soon.
    Ahead,
}

struct LoadGuard<'a> {
    cache: &'a ReadCache,
    id: BlockId,
    loading: Rc<Loading>,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        if self.loading.outcome.borrow().is_none() {
            self.cache.state.borrow_mut().loading.remove(&self.id);
            self.loading.finish(None);
        }
    }
}

impl State {
    fn insert(&mut self, id: BlockId, bytes: Bytes, ahead: bool, config: ReadCacheConfig) {
        let len = bytes.len() as u64;
        if let Some(block) = self.blocks.get_mut(&id) {
            let old = block.bytes.len() as u64;
            if old >= len {
                // A reader's load raced the writer's copy: keep the longer one.
                return;
            }
            // A longer copy of a block at a segment's written end: same place in its queue.
            block.bytes = bytes;
            self.bytes = self.bytes + len - old;
            if block.queue == Queue::Small {
                self.small_bytes = self.small_bytes + len - old;
            }
            if block.unread_ahead {
                self.ahead_bytes -= old;
            }
            block.unread_ahead = ahead;
        } else {
            let queue = if self.ghost_set.remove(&id) {
                Queue::Main
            } else {
                Queue::Small
            };
            match queue {
                Queue::Small => {
                    self.small.push_back(id);
                    self.small_bytes += len;
                }
                Queue::Main => self.main.push_back(id),
            }
            self.bytes += len;
            self.blocks.insert(
                id,
                Block {
                    bytes,
                    queue,
                    reuses: 0,
                    last_read_end: 0,
                    unread_ahead: ahead,
                },
            );
        }
        if ahead {
            self.ahead_bytes += len;
        }
        self.evict_to(config);
    }

    /// A reader read `from..to` of block `id`.
    fn on_read(&mut self, id: BlockId, from: usize, to: usize) {
        let Some(block) = self.blocks.get_mut(&id) else {
            return;
        };
        if block.unread_ahead {
            block.unread_ahead = false;
            self.ahead_bytes -= block.bytes.len() as u64;
        } else if from < block.last_read_end {
            block.reuses = (block.reuses + 1).min(3);
        }
        block.last_read_end = to;
    }

    fn evict_to(&mut self, config: ReadCacheConfig) {
        let small_max = config.bytes_max * SMALL_FIFO_PERCENT / 100;
        while self.bytes > config.bytes_max {
            if self.small_bytes > small_max || self.main.is_empty() {
                let Some(id) = self.small.pop_front() else {
                    break;
                };
                let block = self.blocks.get_mut(&id).expect("queued blocks are held");
                let len = block.bytes.len() as u64;
                self.small_bytes -= len;
                if block.reuses > 0 {
                    block.reuses = 0;
                    block.queue = Queue::Main;
                    self.main.push_back(id);
                } else {
                    self.remove(id);
                    self.remember_ghost(id, config);
                }
            } else {
                let id = self.main.pop_front().expect("main is not empty");
                let block = self.blocks.get_mut(&id).expect("queued blocks are held");
                if block.reuses > 0 {
                    block.reuses -= 1;
                    self.main.push_back(id);
                } else {
                    self.remove(id);
                }
            }
        }
    }

    fn remove(&mut self, id: BlockId) {
        let block = self.blocks.remove(&id).expect("queued blocks are held");
        let len = block.bytes.len() as u64;
        self.bytes -= len;
        self.stats.evictions += 1;
        if block.unread_ahead {
            self.ahead_bytes -= len;
            self.stats.read_ahead_unused += 1;
        }
    }

    /// Ghosts are as many as the main FIFO holds blocks. A ghost that came back leaves a stale
    /// id in the queue; it only makes a later ghost of that block forgotten a little early.
    fn remember_ghost(&mut self, id: BlockId, config: ReadCacheConfig) {
        let ghosts_max = (config.bytes_max / config.block_bytes as u64).max(1) as usize;
        self.ghosts.push_back(id);
        self.ghost_set.insert(id);
        while self.ghosts.len() > ghosts_max {
            if let Some(old) = self.ghosts.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }
}
