//! The storage engine as a library: open a partition's log on direct I/O, append batches, read
//! them back, truncate, apply retention, close and recover; then the same log on the simulated
//! disk, through a power loss. Run it with `cargo run -p oxbow-storage --example log`.
//!
//! A `Partition` belongs to one thread (a glommio executor, as a broker shard is): everything
//! below runs inside one. Batches are Kafka record batches (`oxbow_core::BatchBuilder`); the
//! log gives them offsets, frames them with a checksum and syncs them as its flush policy says.

use oxbow_core::{BatchBuilder, FlushPolicy, LogConfig};
use oxbow_storage::io::{CrashKeep, SimDisk};
use oxbow_storage::{Disk, OpenOptions, Partition};
use std::path::Path;
use std::rc::Rc;

/// Small segments, so this short run rolls a few; `always` syncs each append before it
/// returns (a power loss cannot take an acknowledged batch).
fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024,
        index_interval_bytes: 4096,
        flush: FlushPolicy::Always,
        batch_bytes_max: 16 * 1024,
        write_buffer_bytes: 64 * 1024,
        retention_bytes_max: Some(128 * 1024),
        ..LogConfig::default()
    }
}

fn greeting(n: u64) -> oxbow_core::RecordBatch {
    let mut batch = BatchBuilder::new(oxbow_storage::now_ms());
    for i in 0..4 {
        let value = format!("hello {n}.{i} {}", "-".repeat(1_000));
        batch.push(
            Some(b"greeting"),
            Some(value.as_bytes()),
            oxbow_storage::now_ms(),
        );
    }
    batch.build()
}

async fn on_direct_io(data: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // Once per thread, before the first direct-I/O file is opened.
    oxbow_storage::prepare_shard_io(data, "example").await?;
    let dir = data.join("greetings").join("0");
    let log = Partition::open(&dir, config(), OpenOptions::default()).await?;
    for n in 0..100 {
        let appended = log.append(greeting(n)).await?;
        if n % 25 == 0 {
            println!(
                "batch {n} at offsets {}..={}",
                appended.base_offset, appended.last_offset
            );
        }
    }
    let stats = log.stats();
    println!(
        "{} records in {} segments, {} bytes; durable up to {}",
        stats.log_end_offset, stats.segments, stats.log_bytes, stats.durable_end_offset
    );
    // Reads return whole batches from the one holding the offset, up to about max_bytes.
    let batches = log.read(42, 16 * 1024).await?;
    let record = batches[0].records(u64::MAX)?.next().expect("a record")?;
    println!(
        "offset 42 is in the batch at {}: first value starts {:?}",
        batches[0].base_offset(),
        String::from_utf8_lossy(&record.value.expect("a value")[..10])
    );
    // Truncation drops the batch holding the offset and everything after (a follower does
    // this when its log diverges from a new leader's).
    let end = log.truncate_to(390).await?;
    println!("truncated at 390: the log now ends at {end}");
    // Retention deletes whole sealed segments beyond retention_bytes_max.
    let deleted = log.apply_retention(oxbow_storage::now_ms()).await?;
    println!(
        "retention deleted {deleted} segments: the log starts at {}",
        log.log_start_offset()
    );
    log.close().await;
    // Opening again recovers: checks the tail's frames, truncates a torn one, rebuilds what
    // the index lacks.
    let log = Partition::open(&dir, config(), OpenOptions::default()).await?;
    println!(
        "reopened: {}..{}",
        log.log_start_offset(),
        log.log_end_offset()
    );
    log.close().await;
    Ok(())
}

/// The same engine on the simulated disk: a power loss keeps what was synced, tears the rest.
async fn through_a_power_loss() -> Result<(), Box<dyn std::error::Error>> {
    let disk = SimDisk::new();
    let dir = Path::new("/sim/greetings/0");
    disk.create_dir_all(dir)?;
    let log = Partition::open(dir, config(), OpenOptions::with_disk(Rc::new(disk.boot()))).await?;
    for n in 0..10 {
        log.append(greeting(n)).await?;
    }
    let acknowledged = log.log_end_offset();
    let mut rng = fastrand::Rng::with_seed(7);
    disk.crash(
        &mut rng,
        CrashKeep {
            sector: 0.5,
            set_len: 0.5,
        },
    );
    drop(log);
    let log = Partition::open(dir, config(), OpenOptions::with_disk(Rc::new(disk.boot()))).await?;
    println!(
        "simulated power loss: {acknowledged} records acknowledged, {} recovered",
        log.log_end_offset()
    );
    log.close().await;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = std::env::temp_dir().join(format!("oxbow-example-{}", std::process::id()));
    let outcome = glommio::LocalExecutorBuilder::default()
        .spawn({
            let data = data.clone();
            move || async move {
                on_direct_io(&data).await.map_err(|e| e.to_string())?;
                through_a_power_loss().await.map_err(|e| e.to_string())
            }
        })?
        .join()?;
    let _ = std::fs::remove_dir_all(&data);
    Ok(outcome?)
}
