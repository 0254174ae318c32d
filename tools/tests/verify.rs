//! `oxbow storage verify` on a real data directory: a clean log passes, a torn tail is named
//! but not counted, a damaged frame inside a sealed segment is reported with exactly its
//! offsets, and verification changes no file.

use oxbow_core::{BatchBuilder, FlushPolicy, LogConfig};
use oxbow_storage::layout::partition_dir;
use oxbow_storage::{OpenOptions, Partition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOPIC: &str = "logs";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024,
        batch_bytes_max: 16 * 1024,
        write_buffer_bytes: 64 * 1024,
        append_queue_bytes_max: 1 << 20,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    }
}

/// Two partitions of 300 batches of 2 records each, over several 64 KiB segments.
fn seed(data: &Path) {
    let data = data.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&data, "seed")
                .await
                .unwrap();
            for p in 0..2 {
                let dir = partition_dir(&data, TOPIC, p);
                let partition = Partition::open(&dir, config(), OpenOptions::default())
                    .await
                    .unwrap();
                for i in 0..300 {
                    let mut builder = BatchBuilder::new(0);
                    builder.push(
                        None,
                        Some(format!("p{p} batch {i} {}", "x".repeat(500)).as_bytes()),
                        0,
                    );
                    builder.push(None, Some(b"second record"), 0);
                    partition.append(builder.build()).await.unwrap();
                }
                partition.close().await;
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// (position, base offset, last offset) of every frame in a segment file.
fn frames(path: &Path) -> Vec<(usize, u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 32 <= bytes.len() && bytes[at..at + 4] == *b"OXBF" {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let base = u64::from_le_bytes(bytes[at + 12..at + 20].try_into().unwrap());
        let delta = u32::from_le_bytes(bytes[at + 20..at + 24].try_into().unwrap()) as u64;
        out.push((at, base, base + delta));
        at += len;
    }
    out
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn snapshot(data: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for p in 0..2 {
        for entry in std::fs::read_dir(partition_dir(data, TOPIC, p)).unwrap() {
            let path = entry.unwrap().path();
            files.insert(path.clone(), std::fs::read(path).unwrap());
        }
    }
    files
}

fn verify(data: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(["storage", "verify", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    (output.status.code().unwrap(), stdout)
}

#[test]
fn verify_names_damaged_offsets_exactly_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    seed(data.path());
    let (code, out) = verify(data.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("verified 2 partitions") && out.contains("600 batches: 0 damaged ranges"),
        "{out}"
    );
    assert!(out.contains("index ok"), "{out}");

    // A crash tears the last frame of partition 1: named, not counted.
    let p1 = segments(&partition_dir(data.path(), TOPIC, 1));
    let last = p1.last().unwrap();
    let (torn_at, _, _) = *frames(last).last().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(torn_at as u64 + 20)
        .unwrap();
    let (code, out) = verify(data.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("torn tail at byte {torn_at}")),
        "{out}"
    );

    // A flipped byte inside the third frame of a sealed segment of partition 0.
    let p0 = segments(&partition_dir(data.path(), TOPIC, 0));
    assert!(p0.len() >= 3, "expected several segments");
    let victim = &p0[1];
    let (at, first, last_offset) = frames(victim)[2];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[at + 100] ^= 0x10;
    std::fs::write(victim, bytes).unwrap();
    let before = snapshot(data.path());
    let (code, out) = verify(data.path());
    assert_eq!(code, 1, "{out}");
    let expected = format!("DAMAGED at byte {at} ");
    let line = out
        .lines()
        .find(|l| l.contains(&expected))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains(&format!("offsets {first}..={last_offset} unreadable")),
        "{line}"
    );
    assert!(line.contains("checksum"), "{line}");
    assert!(out.contains("1 damaged ranges"), "{out}");
    // The frames after the damage in that segment were still checked.
    let victim_name = victim.file_name().unwrap().to_str().unwrap();
    let summary = out
        .lines()
        .find(|l| l.contains(victim_name) && l.contains("batches"))
        .unwrap();
    let expected_batches = frames(victim).len() - 1;
    assert!(
        summary.contains(&format!(": {expected_batches} batches")),
        "{summary}"
    );
    assert_eq!(
        snapshot(data.path()),
        before,
        "verify must not change any file"
    );

    let missing = data.path().join("missing");
    let (code, _) = verify(&missing);
    assert_eq!(code, 2, "a mistyped data directory is an error");
    assert!(!missing.exists(), "verify must not create the directory");
}
