//! Helpers shared by the storage integration tests: a shard-like executor over a temporary
//! directory, and batches whose content is a pure function of their index.
#![allow(dead_code)]

use bytes::Bytes;
use glommio::LocalExecutorBuilder;
use oxbow_core::{BatchBuilder, FlushPolicy, LogConfig, RecordBatch};
use std::future::Future;
use std::path::{Path, PathBuf};

/// Runs `test` on a fresh glommio executor (as a shard would) with a new data directory.
pub fn on_shard<F, Fut>(test: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    LocalExecutorBuilder::default()
        .io_memory(16 << 20)
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&path, "shard-0")
                .await
                .expect("probe");
            test(path).await;
        })
        .expect("executor")
        .join()
        .expect("test executor panicked");
    drop(dir);
}

/// Small segments so tests cross segment boundaries quickly.
pub fn small_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024,
        index_interval_bytes: 1024,
        flush,
        batch_bytes_max: 16 * 1024,
        write_buffer_bytes: 64 * 1024,
        append_queue_bytes_max: 1 << 20,
        tail_cache_bytes_max: 8 * 1024,
        retention_age_max_ms: None,
        ..LogConfig::default()
    }
}

/// Number of records in batch `index`.
pub fn records_in(index: u64) -> u64 {
    index % 5 + 1
}

/// Batch `index`: 1-5 records whose values name the batch and record and vary in size.
pub fn batch(index: u64) -> RecordBatch {
    let mut builder = BatchBuilder::new(1_000_000 + index as i64);
    for record in 0..records_in(index) {
        let pad = ((index * 37 + record * 11) % 1500) as usize;
        let value = format!("batch-{index}-record-{record}-{}", "x".repeat(pad));
        let key = format!("key-{}", index % 7);
        builder.push(
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            1_000_000 + index as i64,
        );
    }
    builder.build()
}

/// Which batch a stored batch is, read back from its first record's value.
pub fn batch_index(batch: &RecordBatch) -> u64 {
    let record = batch.records(u64::MAX).unwrap().next().unwrap().unwrap();
    let value = record.value.unwrap();
    let text = std::str::from_utf8(&value).unwrap();
    text.split('-').nth(1).unwrap().parse().unwrap()
}

/// The bytes batch `index` must have once stored at `base_offset`.
pub fn expected_bytes(index: u64, base_offset: u64) -> Bytes {
    batch(index).with_base_offset(base_offset, 0).into_bytes()
}

/// Reads every batch from `from` to the log end.
pub async fn read_all(partition: &oxbow_storage::Partition, from: u64) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batches = partition.read(next, 64 * 1024).await.expect("read");
        let Some(last) = batches.last() else { break };
        next = last.last_offset() + 1;
        out.extend(batches);
    }
    out
}

/// Files in `dir` with the given extension, sorted.
pub fn files_with(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// The base offset of a segment file, from its name.
pub fn segment_base(path: &Path) -> u64 {
    let stem = path.file_stem().and_then(|s| s.to_str());
    stem.and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{path:?} is not named after a base offset"))
}

/// glommio 0.9 leaks one eventfd per executor it builds; tests that build thousands of
/// executors (long property runs) raise the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    });
}

/// Opens (recovering) the partition in `dir` on the real disk.
pub async fn open(
    dir: &std::path::Path,
    config: oxbow_core::LogConfig,
) -> oxbow_storage::Partition {
    oxbow_storage::Partition::open(dir, config, oxbow_storage::OpenOptions::default())
        .await
        .expect("open")
}

/// Appends batches `range` one after another; returns each batch's base offset.
pub async fn append_range(
    partition: &oxbow_storage::Partition,
    range: std::ops::Range<u64>,
) -> Vec<u64> {
    let mut bases = Vec::new();
    for i in range {
        bases.push(
            partition
                .append(batch(i))
                .await
                .expect("append")
                .base_offset,
        );
    }
    bases
}

/// The stored batches are batches 0..count, each with its bytes at its offsets.
pub fn assert_log_is(batches: &[oxbow_core::RecordBatch], count: u64) {
    assert_eq!(batches.len() as u64, count, "batch count");
    let mut offset = 0;
    for (i, stored) in batches.iter().enumerate() {
        assert_eq!(batch_index(stored), i as u64);
        assert_eq!(
            stored.bytes(),
            &expected_bytes(i as u64, offset),
            "bytes of batch {i}"
        );
        offset += records_in(i as u64);
    }
}
