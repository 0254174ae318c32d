//! Storage engine benchmarks, run on one pinned shard like the broker's.
//!
//! `append`: N concurrent appenders write frames of a given size for a fixed time under a flush
//! policy; prints one JSON line with throughput and per-append latency percentiles.
//! `recovery`: builds a partition of a given size, then times `Partition::open` with the
//! sealed segments' indexes present and with them deleted.
//! `compaction`: builds a compacted partition of keyed updates, then times one cleaning pass
//! over all of it (no I/O pacing).
//!
//! Driven by `benches/storage.sh`, which also measures fio on the same file system.

use clap::{Parser, Subcommand, ValueEnum};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use oxbow_core::{BatchBuilder, FlushPolicy, LogConfig, RecordBatch};
use oxbow_storage::{OpenOptions, Partition};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Cli {
    /// Directory on the file system under test (a fresh partition is made inside).
    #[arg(long)]
    dir: PathBuf,
    /// CPU to pin the shard to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Clone, Copy, ValueEnum)]
enum Flush {
    Never,
    Always,
}

#[derive(Subcommand)]
enum Mode {
    Append {
        /// Size of each frame on disk (batch + 32-byte frame header).
        #[arg(long)]
        frame_bytes: usize,
        #[arg(long, value_enum)]
        flush: Flush,
        #[arg(long, default_value_t = 1)]
        appenders: usize,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    Recovery {
        /// Bytes of frames to write before timing recovery.
        #[arg(long, default_value_t = 1 << 30)]
        total_bytes: u64,
        #[arg(long, default_value_t = 128 << 20)]
        segment_bytes: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    Compaction {
        /// Bytes of records to write before timing a pass.
        #[arg(long, default_value_t = 1 << 30)]
        total_bytes: u64,
        /// Distinct keys: record n updates key n mod KEYS.
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        #[arg(long, default_value_t = 1024)]
        record_bytes: usize,
        #[arg(long, default_value_t = 128 << 20)]
        segment_bytes: u64,
    },
}

const FRAME_HEADER_BYTES: usize = oxbow_storage::frame::FRAME_HEADER_BYTES;

/// A one-record batch whose frame is exactly `frame_bytes` long.
fn batch_of_frame_size(frame_bytes: usize) -> RecordBatch {
    let target = frame_bytes - FRAME_HEADER_BYTES;
    let mut value_len = target.saturating_sub(61 + 8);
    loop {
        let mut builder = BatchBuilder::new(oxbow_storage::now_ms());
        builder.push(None, Some(&vec![0xA5; value_len]), oxbow_storage::now_ms());
        let size = builder.size_bytes();
        if size == target {
            return builder.build();
        }
        assert!(
            size < target || value_len > 0,
            "cannot fit a batch into {frame_bytes} bytes"
        );
        value_len = if size > target {
            value_len - 1
        } else {
            value_len + 1
        };
    }
}

fn config(flush: Flush, frame_bytes: usize, segment_bytes: u64) -> LogConfig {
    let batch_bytes_max = (frame_bytes as u32).next_power_of_two().max(1 << 20);
    LogConfig {
        flush: match flush {
            Flush::Never => FlushPolicy::Never,
            Flush::Always => FlushPolicy::Always,
        },
        segment_bytes_max: segment_bytes,
        batch_bytes_max,
        write_buffer_bytes: (batch_bytes_max * 4).max(4 << 20),
        append_queue_bytes_max: 256 << 20,
        retention_age_max_ms: None,
        ..LogConfig::default()
    }
}

fn on_shard<T: Send + 'static>(
    cpu: usize,
    dir: PathBuf,
    work: impl AsyncFnOnce(PathBuf) -> T + Send + 'static,
) -> T {
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .io_memory(64 << 20)
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&dir, "bench")
                .await
                .expect("probe");
            work(dir).await
        })
        .expect("executor")
        .join()
        .expect("shard panicked")
}

async fn append(dir: &Path, frame_bytes: usize, flush: Flush, appenders: usize, seconds: f64) {
    let partition_dir = dir.join("bench-append").join("0");
    let _ = std::fs::remove_dir_all(&partition_dir);
    let partition = Rc::new(
        Partition::open(
            &partition_dir,
            config(flush, frame_bytes, 1 << 30),
            OpenOptions::default(),
        )
        .await
        .expect("open"),
    );
    let batch = batch_of_frame_size(frame_bytes);
    let latencies = Rc::new(RefCell::new(Histogram::<u64>::new(3).unwrap()));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let (partition, batch, latencies) =
                (partition.clone(), batch.clone(), latencies.clone());
            glommio::spawn_local(async move {
                let mut appends = 0u64;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    partition.append(batch.clone()).await.expect("append");
                    latencies
                        .borrow_mut()
                        .record(t0.elapsed().as_micros() as u64)
                        .unwrap();
                    appends += 1;
                }
                appends
            })
        })
        .collect();
    let mut appends = 0;
    for task in tasks {
        appends += task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    partition.close().await;
    let _ = std::fs::remove_dir_all(&partition_dir);
    let h = latencies.borrow();
    let bytes = appends * frame_bytes as u64;
    println!(
        "{{\"mode\":\"append\",\"frame_bytes\":{frame_bytes},\"flush\":\"{}\",\"appenders\":{appenders},\
         \"seconds\":{elapsed:.3},\"appends\":{appends},\"mb_per_s\":{:.1},\"appends_per_s\":{:.0},\
         \"p50_us\":{},\"p99_us\":{},\"p999_us\":{}}}",
        match flush {
            Flush::Never => "never",
            Flush::Always => "always",
        },
        bytes as f64 / elapsed / 1e6,
        appends as f64 / elapsed,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
    );
}

async fn recovery(dir: &Path, total_bytes: u64, segment_bytes: u64, runs: usize) {
    let partition_dir = dir.join("bench-recovery").join("0");
    let _ = std::fs::remove_dir_all(&partition_dir);
    let frame_bytes = 1 << 20;
    let config = config(Flush::Never, frame_bytes, segment_bytes);
    let partition = Partition::open(&partition_dir, config.clone(), OpenOptions::default())
        .await
        .expect("open");
    let batch = batch_of_frame_size(frame_bytes);
    for _ in 0..total_bytes / frame_bytes as u64 {
        partition.append(batch.clone()).await.expect("append");
    }
    partition.close().await;
    let mut with_index = Vec::new();
    let mut without_index = Vec::new();
    let mut end = 0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let partition = Partition::open(&partition_dir, config.clone(), OpenOptions::default())
            .await
            .expect("open");
        with_index.push(t0.elapsed().as_secs_f64() * 1e3);
        end = partition.log_end_offset();
        partition.close().await;
        for entry in std::fs::read_dir(&partition_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "index") {
                std::fs::remove_file(path).unwrap();
            }
        }
        let t0 = Instant::now();
        let partition = Partition::open(&partition_dir, config.clone(), OpenOptions::default())
            .await
            .expect("open");
        without_index.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(partition.log_end_offset(), end, "recovery lost data");
        partition.close().await;
    }
    let _ = std::fs::remove_dir_all(&partition_dir);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{{\"mode\":\"recovery\",\"total_bytes\":{total_bytes},\"segment_bytes\":{segment_bytes},\
         \"batches\":{end},\"runs\":{runs},\"with_index_ms\":{:.1},\"without_index_ms\":{:.1}}}",
        median(&mut with_index),
        median(&mut without_index),
    );
}

async fn compaction(
    dir: &Path,
    total_bytes: u64,
    keys: u64,
    record_bytes: usize,
    segment_bytes: u64,
) {
    let partition_dir = dir.join("bench-compaction").join("0");
    let _ = std::fs::remove_dir_all(&partition_dir);
    let config = LogConfig {
        cleanup_policy: "compact".parse().unwrap(),
        min_cleanable_dirty_ratio: oxbow_core::config::DirtyRatio::try_from(0.0).unwrap(),
        ..config(Flush::Never, 1 << 20, segment_bytes)
    };
    let partition = Partition::open(&partition_dir, config, OpenOptions::default())
        .await
        .expect("open");
    let value = vec![0x5A; record_bytes];
    let per_batch = 16;
    let mut n = 0u64;
    while partition.stats().log_bytes < total_bytes {
        let mut batch = BatchBuilder::new(oxbow_storage::now_ms());
        for _ in 0..per_batch {
            let key = format!("key-{}", n % keys);
            batch.push(Some(key.as_bytes()), Some(&value), oxbow_storage::now_ms());
            n += 1;
        }
        partition.append(batch.build()).await.expect("append");
    }
    // The pass cleans the sealed segments; the active one stays as it is.
    let before = partition.stats();
    let cleaner = oxbow_storage::Cleaner {
        key_map_bytes_max: 256 << 20,
        decompressed_bytes_max: 64 << 20,
        pace: oxbow_storage::IoPace::new(u64::MAX),
    };
    let t0 = Instant::now();
    let done = (partition.compact(oxbow_storage::now_ms(), &cleaner).await)
        .expect("compact")
        .expect("a pass was due");
    let seconds = t0.elapsed().as_secs_f64();
    partition.close().await;
    let _ = std::fs::remove_dir_all(&partition_dir);
    println!(
        "{{\"mode\":\"compaction\",\"records\":{n},\"keys\":{keys},\"record_bytes\":{record_bytes},\
         \"log_bytes\":{},\"cleaned_bytes\":{},\"bytes_after\":{},\"segments_rewritten\":{},\
         \"segments_written\":{},\"records_removed\":{},\"seconds\":{seconds:.3},\"mb_per_s\":{:.1}}}",
        before.log_bytes,
        done.bytes_before,
        done.bytes_after,
        done.segments_rewritten,
        done.segments_written,
        done.records_removed,
        done.bytes_before as f64 / seconds / 1e6,
    );
}

fn main() {
    let cli = Cli::parse();
    let cpu = cli.cpu;
    match cli.mode {
        Mode::Append {
            frame_bytes,
            flush,
            appenders,
            seconds,
        } => on_shard(cpu, cli.dir, async move |dir: PathBuf| {
            append(&dir, frame_bytes, flush, appenders, seconds).await
        }),
        Mode::Recovery {
            total_bytes,
            segment_bytes,
            runs,
        } => on_shard(cpu, cli.dir, async move |dir: PathBuf| {
            recovery(&dir, total_bytes, segment_bytes, runs).await
        }),
        Mode::Compaction {
            total_bytes,
            keys,
            record_bytes,
            segment_bytes,
        } => on_shard(cpu, cli.dir, async move |dir: PathBuf| {
            compaction(&dir, total_bytes, keys, record_bytes, segment_bytes).await
        }),
    }
}
