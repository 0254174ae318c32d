//! The read cache over an in-memory disk: one disk read per block however many readers, the
//! budget, scan resistance, growing segment ends and read-ahead.

use super::*;
use crate::io::{Disk, SimDisk};
use std::path::Path;
use std::rc::Rc;

const BLOCK: u64 = 64 << 10;

fn config(blocks: u64, read_ahead_blocks: u32) -> ReadCacheConfig {
    ReadCacheConfig {
        bytes_max: blocks * BLOCK,
        block_bytes: BLOCK as u32,
        read_ahead_blocks,
        cache_writes: true,
    }
}

fn byte_at(pos: u64) -> u8 {
    (pos % 251) as u8
}

/// A file of `len` bytes (a multiple of the I/O alignment) where byte `i` is `byte_at(i)`.
async fn file_of(disk: &SimDisk, name: &str, len: u64) -> SegmentFile {
    disk.create_dir_all(Path::new("/sim")).unwrap();
    let file = disk.open(&Path::new("/sim").join(name)).await.unwrap();
    write(&file, 0, len).await;
    file
}

async fn write(file: &SegmentFile, from: u64, to: u64) {
    let mut buf = file.alloc_buffer((to - from) as usize);
    for (i, b) in buf.as_bytes_mut().iter_mut().enumerate() {
        *b = byte_at(from + i as u64);
    }
    file.write_all_at(buf, from).await.unwrap();
}

fn check(bytes: &Bytes, pos: u64) {
    for (i, b) in bytes.iter().enumerate() {
        assert_eq!(*b, byte_at(pos + i as u64), "byte {}", pos + i as u64);
    }
}

/// Reads `from..to` the way a frame walk does: whatever the cache hands back, from where the
/// last answer ended.
async fn read_through(cache: &ReadCache, file: &SegmentFile, key: u64, from: u64, to: u64) {
    let mut pos = from;
    while pos < to {
        let bytes = cache.read(file, key, pos, 4096, to).await.unwrap();
        assert!(!bytes.is_empty());
        check(&bytes, pos);
        pos += bytes.len() as u64;
    }
}

fn run<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { test().await })
        .expect("executor")
        .join()
        .expect("test task");
}

#[test]
fn many_readers_of_a_segment_read_each_block_from_disk_once() {
    run(|| async {
        let disk = SimDisk::new();
        let file = file_of(&disk, "a", 10 * BLOCK).await;
        let cache = ReadCache::new(config(32, 0));
        for _ in 0..3 {
            read_through(&cache, &file, 1, 100, 10 * BLOCK).await;
        }
        let stats = cache.stats();
        assert_eq!(stats.disk_bytes, 10 * BLOCK);
        assert_eq!(stats.misses, 10);
        assert_eq!(stats.bytes, 10 * BLOCK);
    });
}

#[test]
fn readers_of_a_block_being_loaded_wait_for_that_one_read() {
    run(|| async {
        let disk = SimDisk::with_latency(7, 3);
        let file = file_of(&disk, "a", 2 * BLOCK).await;
        let cache = ReadCache::new(config(32, 0));
        let (a, b) = futures_lite::future::zip(
            cache.read(&file, 1, 10, 100, 2 * BLOCK),
            cache.read(&file, 1, 5000, 100, 2 * BLOCK),
        )
        .await;
        check(&a.unwrap(), 10);
        check(&b.unwrap(), 5000);
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.hits, stats.disk_bytes), (1, 1, BLOCK));
    });
}

#[test]
fn bytes_spanning_blocks_are_joined_and_the_rest_of_a_block_is_handed_out_whole() {
    run(|| async {
        let disk = SimDisk::new();
        let file = file_of(&disk, "a", 4 * BLOCK).await;
        let cache = ReadCache::new(config(32, 0));
        let rest = cache.read(&file, 1, 100, 10, 4 * BLOCK).await.unwrap();
        assert_eq!(
            rest.len() as u64,
            BLOCK - 100,
            "the rest of the first block"
        );
        let spanning = cache
            .read(&file, 1, BLOCK - 10, 3 * BLOCK as usize, 4 * BLOCK)
            .await
            .unwrap();
        assert_eq!(
            spanning.len() as u64,
            3 * BLOCK + 10,
            "up to the end of the last block"
        );
        check(&spanning, BLOCK - 10);
        let clipped = cache.read(&file, 1, 3 * BLOCK, 5 * BLOCK as usize, 3 * BLOCK + 7);
        assert_eq!(clipped.await.unwrap().len(), 7, "never past the limit");
    });
}

#[test]
fn the_budget_holds_and_a_scan_does_not_push_out_blocks_in_use() {
    run(|| async {
        let disk = SimDisk::new();
        let shared = file_of(&disk, "shared", 4 * BLOCK).await;
        let scanned = file_of(&disk, "scanned", 200 * BLOCK).await;
        let cache = ReadCache::new(config(20, 0));
        // Two readers of `shared`, one after the other: its blocks are reused.
        read_through(&cache, &shared, 1, 0, 4 * BLOCK).await;
        read_through(&cache, &shared, 1, 0, 4 * BLOCK).await;
        // A catch-up reader streams through ten times the budget, continuing where it stopped.
        let mut pos = 0;
        while pos < 200 * BLOCK {
            let bytes = cache.read(&scanned, 2, pos, 1, 200 * BLOCK).await.unwrap();
            pos += bytes.len() as u64;
            assert!(cache.stats().bytes <= 20 * BLOCK, "over budget");
        }
        let before = cache.stats();
        read_through(&cache, &shared, 1, 0, 4 * BLOCK).await;
        let after = cache.stats();
        assert_eq!(
            after.disk_bytes, before.disk_bytes,
            "the shared blocks stayed"
        );
        assert!(after.evictions >= 180);
    });
}

#[test]
fn bytes_written_after_a_block_was_cached_are_read_once_a_reader_needs_them() {
    run(|| async {
        let disk = SimDisk::new();
        let file = file_of(&disk, "a", 8192).await;
        let cache = ReadCache::new(config(32, 0));
        let first = cache.read(&file, 1, 0, 8192, 8192).await.unwrap();
        assert_eq!(first.len(), 8192);
        write(&file, 8192, 3 * 8192).await;
        let grown = cache
            .read(&file, 1, 4096, 2 * 8192, 3 * 8192)
            .await
            .unwrap();
        assert_eq!(grown.len(), 3 * 8192 - 4096);
        check(&grown, 4096);
        assert_eq!(cache.stats().bytes, 3 * 8192, "one copy of the block");
    });
}

#[test]
fn read_ahead_loads_whole_blocks_that_the_reader_then_finds_in_memory() {
    run(|| async {
        let disk = SimDisk::with_latency(3, 2);
        let file = file_of(&disk, "a", 6 * BLOCK + 4096).await;
        let cache = Rc::new(ReadCache::new(config(32, 4)));
        cache.read_ahead(&file, 1, BLOCK, 5 * BLOCK + 10, 6 * BLOCK + 4096);
        // The read-ahead tasks start before the reader goes on.
        futures_lite::future::yield_now().await;
        read_through(&cache, &file, 1, 0, 6 * BLOCK + 4096).await;
        let stats = cache.stats();
        assert_eq!(
            stats.read_ahead_blocks, 5,
            "whole blocks, up to the one holding `to`"
        );
        assert_eq!(
            stats.misses, 2,
            "the blocks before and after the read-ahead"
        );
        assert_eq!(stats.disk_bytes, 6 * BLOCK + 4096);
        assert_eq!(stats.read_ahead_unused, 0);
    });
}

#[test]
fn read_ahead_stops_at_half_the_budget() {
    run(|| async {
        let disk = SimDisk::new();
        let file = file_of(&disk, "a", 40 * BLOCK).await;
        let cache = Rc::new(ReadCache::new(config(8, 64)));
        cache.read_ahead(&file, 1, 0, 40 * BLOCK, 40 * BLOCK);
        futures_lite::future::yield_now().await;
        read_through(&cache, &file, 1, 0, 40 * BLOCK).await;
        let stats = cache.stats();
        assert!(stats.read_ahead_blocks <= 4, "{stats:?}");
        assert_eq!(stats.disk_bytes, 40 * BLOCK, "and nothing is read twice");
    });
}

#[test]
fn what_the_writer_writes_is_read_back_from_memory() {
    use oxbow_core::{BatchBuilder, LogConfig};
    run(|| async {
        let disk = Rc::new(SimDisk::new());
        disk.create_dir_all(Path::new("/p")).unwrap();
        let cache = Rc::new(ReadCache::new(config(64, 0)));
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            tail_cache_bytes_max: 4096,
            retention_age_max_ms: None,
            ..LogConfig::default()
        };
        let options = crate::OpenOptions {
            disk: Some(disk.clone()),
            read_cache: Some(cache.clone()),
        };
        let log = crate::Partition::open(Path::new("/p"), config, options)
            .await
            .unwrap();
        let mut appended = 0;
        for i in 0..400u64 {
            let mut builder = BatchBuilder::new(i as i64);
            builder.push(None, Some(&vec![i as u8; 8000]), i as i64);
            appended = log.append(builder.build()).await.unwrap().last_offset + 1;
        }
        let mut next = 0;
        let mut read = 0;
        while next < appended {
            let batches = log.read(next, 256 << 10).await.unwrap();
            read += batches.iter().map(|b| b.len()).sum::<usize>();
            next = batches.last().unwrap().last_offset() + 1;
        }
        let stats = cache.stats();
        assert!(read > 3 << 20, "{read} bytes read");
        assert!(stats.written_blocks >= 48, "{stats:?}");
        // Only the active segment's last, unfinished block comes from the disk.
        assert!(stats.disk_bytes <= BLOCK, "{stats:?}");
        log.close().await;
    });
}
