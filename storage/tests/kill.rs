//! Kills a real writer process with SIGKILL at a random moment and checks that every append it
//! reported as acknowledged (flush `always`) is on disk after reopening, with its offset and
//! bytes unchanged, and that the log is one contiguous run of offsets.
//!
//! The writer is this same test binary, re-executed with `OXBOW_KILL_CHILD_DIR` set.

mod common;

use common::*;
use oxbow_core::FlushPolicy;
use oxbow_storage::{OpenOptions, Partition};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::rc::Rc;

const CHILD_DIR_ENV: &str = "OXBOW_KILL_CHILD_DIR";
const CHILD_FIRST_INDEX_ENV: &str = "OXBOW_KILL_CHILD_FIRST_INDEX";
const APPENDERS: u64 = 8;
const CHILD_APPENDS_MAX: u64 = 20_000;

fn config() -> oxbow_core::LogConfig {
    small_config(FlushPolicy::Always)
}

/// The child: 8 concurrent appenders; prints "ack <index> <base>" once an append is durable.
fn run_child(dir: std::path::PathBuf, first_index: u64) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&dir, "shard-0")
                .await
                .unwrap();
            let partition = Rc::new(
                Partition::open(&dir, config(), OpenOptions::default())
                    .await
                    .unwrap(),
            );
            let tasks: Vec<_> = (0..APPENDERS)
                .map(|lane| {
                    let partition = partition.clone();
                    glommio::spawn_local(async move {
                        let mut index = first_index + lane;
                        while index < first_index + CHILD_APPENDS_MAX {
                            let appended = partition.append(batch(index)).await.unwrap();
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "ack {index} {}", appended.base_offset).unwrap();
                            out.flush().unwrap();
                            index += APPENDERS;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let first = std::env::var(CHILD_FIRST_INDEX_ENV)
            .unwrap()
            .parse()
            .unwrap();
        run_child(dir.into(), first);
        return;
    }
    let cycles: u64 = std::env::var("OXBOW_KILL_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(4);
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let data = tempfile::tempdir().unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for cycle in 0..cycles {
        let kill_after = rng.usize(1..400);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "acknowledged_appends_survive_sigkill",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, data.path())
            .env(CHILD_FIRST_INDEX_ENV, (cycle * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(line) = lines.next() else { break };
            if let Some(ack) = parse_ack(&line.unwrap()) {
                acked.push(ack);
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acks printed before the kill are still in the pipe.
        acked.extend(lines.map_while(Result::ok).filter_map(|l| parse_ack(&l)));
        assert!(seen > 0, "cycle {cycle}: the child acknowledged nothing");
        verify(data.path().to_path_buf(), acked.clone());
    }
    println!(
        "{} acknowledged appends verified across {cycles} kills",
        acked.len()
    );
}

fn parse_ack(line: &str) -> Option<(u64, u64)> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn verify(dir: std::path::PathBuf, acked: Vec<(u64, u64)>) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&dir, "shard-0")
                .await
                .unwrap();
            let partition = Partition::open(&dir, config(), OpenOptions::default())
                .await
                .unwrap();
            let log = read_all(&partition, 0).await;
            let mut next = 0;
            for stored in &log {
                assert_eq!(stored.base_offset(), next, "offsets must be contiguous");
                next = stored.last_offset() + 1;
            }
            for (index, base) in acked {
                let found = partition.read(base, 1).await.unwrap();
                let stored = found
                    .first()
                    .unwrap_or_else(|| panic!("acked batch {index} at {base} lost"));
                assert_eq!(stored.base_offset(), base, "acked batch {index} moved");
                assert_eq!(
                    stored.bytes(),
                    &expected_bytes(index, base),
                    "acked batch {index} changed"
                );
            }
            partition.close().await;
        })
        .unwrap()
        .join()
        .unwrap();
}
