//! `oxbow serve` as a real process: it opens every partition on its owner shard (recovering a
//! torn tail on the way), reports ready, and on SIGTERM or SIGINT closes everything and exits 0.

use oxbow_core::placement::owner_shard;
use oxbow_core::{BatchBuilder, LogConfig};
use oxbow_storage::layout::partition_dir;
use oxbow_storage::{OpenOptions, Partition};
mod common;

use common::{field, fixed_port_args, Broker};
use std::path::{Path, PathBuf};
use std::process::Command;

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 4;
const BATCHES: u64 = 50;

fn on_shard<T: Send + 'static>(
    dir: PathBuf,
    work: impl AsyncFnOnce(PathBuf) -> T + Send + 'static,
) -> T {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&dir, "shard-0")
                .await
                .unwrap();
            work(dir).await
        })
        .unwrap()
        .join()
        .unwrap()
}

fn value(partition: u32, i: u64) -> Vec<u8> {
    format!("p{partition}-m{i}").into_bytes()
}

async fn open_partition(data: &Path, p: u32) -> Partition {
    let dir = partition_dir(data, TOPIC, p);
    Partition::open(&dir, LogConfig::default(), OpenOptions::default())
        .await
        .unwrap()
}

/// Writes BATCHES one-record batches into each partition, then a torn frame onto partition 2.
fn seed_data(data: &Path) {
    on_shard(data.to_path_buf(), async move |data: PathBuf| {
        for p in 0..PARTITIONS {
            let partition = open_partition(&data, p).await;
            for i in 0..BATCHES {
                let mut builder = BatchBuilder::new(0);
                builder.push(None, Some(&value(p, i)), 0);
                partition.append(builder.build()).await.unwrap();
            }
            partition.close().await;
        }
    });
    let segment = partition_dir(data, TOPIC, 2).join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(b"OXBF\x00\x10\x00\x00 torn frame of a crashed write");
    std::fs::write(&segment, bytes).unwrap();
}

fn check_data(data: &Path) {
    on_shard(data.to_path_buf(), async move |data: PathBuf| {
        for p in 0..PARTITIONS {
            let partition = open_partition(&data, p).await;
            assert_eq!(partition.log_end_offset(), BATCHES, "partition {p}");
            for i in 0..BATCHES {
                let batch = partition.read(i, 1).await.unwrap().remove(0);
                let record = batch.records(u64::MAX).unwrap().next().unwrap().unwrap();
                assert_eq!(record.value.unwrap().as_ref(), value(p, i).as_slice());
            }
            partition.close().await;
        }
    });
}

fn shard_of_log_line(line: &str) -> usize {
    let at = line.find("shard=").expect("shard field") + "shard=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn serve_opens_partitions_on_owner_shards_and_stops_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    seed_data(data.path());
    let mut broker = Broker::start(&["--data-dir", data.path().to_str().unwrap(), "--shards", "2"]);
    let ready = broker.wait_for("oxbow ready");
    assert!(
        ready.contains("shards=2") && ready.contains("partitions=4"),
        "{ready}"
    );
    let log = broker.seen.clone();
    for p in 0..PARTITIONS {
        let opened = log
            .iter()
            .find(|l| l.contains("partition opened") && l.contains(&format!("partition={p} ")))
            .unwrap_or_else(|| panic!("partition {p} not opened:\n{}", log.join("\n")));
        assert_eq!(
            shard_of_log_line(opened),
            owner_shard(TOPIC, p, 2),
            "{opened}"
        );
    }
    assert!(
        log.iter().any(|l| l.contains("truncating the torn tail")),
        "torn tail not reported"
    );
    let status = broker.signal(libc::SIGTERM);
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        broker
            .seen
            .iter()
            .filter(|l| l.contains("shard stopped"))
            .count(),
        2
    );
    check_data(data.path());
}

#[test]
fn config_file_is_read_flags_override_it_and_sigint_stops() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("oxbow.toml");
    std::fs::write(
        &config,
        "shards = 3\n[log]\nflush = \"interval\"\nflush_interval_ms = 50\n",
    )
    .unwrap();
    let dir = data.path().join("data");
    let mut broker = Broker::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--shards",
        "1",
    ]);
    let ready = broker.wait_for("oxbow ready");
    assert!(
        ready.contains("shards=1"),
        "flag must override the file: {ready}"
    );
    assert!(broker.signal(libc::SIGINT).success());
    assert!(dir.join(".shard-0.probe").exists());
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, ready) =
        common::start_configured(dir.path(), "log_format = \"json\"\nshards = 1\n");
    let line: serde_json::Value = serde_json::from_str(&ready).expect("a JSON line");
    assert_eq!(line["level"], "INFO", "{ready}");
    assert_eq!(line["fields"]["message"], "oxbow ready", "{ready}");
    assert_eq!(line["fields"]["shards"], 1, "{ready}");
    // The fields carry what a collector needs, e.g. the address to reach it at.
    let kafka = line["fields"]["kafka"].as_str().unwrap();
    std::net::TcpStream::connect(kafka).expect("the logged address answers");
    broker.signal(libc::SIGTERM);
    let stopped: serde_json::Value =
        serde_json::from_str(broker.seen.last().unwrap()).expect("a JSON line");
    assert_eq!(stopped["fields"]["message"], "oxbow stopped");
}

#[test]
fn bad_configuration_is_one_clear_error_and_a_failure_exit() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("bad.toml");
    std::fs::write(&config, "[log]\nsegment_bytes_max = 10\n").unwrap();
    for args in [
        vec!["--config", config.to_str().unwrap()],
        vec!["--config", "/nonexistent/oxbow.toml"],
        vec!["--shards", "100000"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
            .arg("serve")
            .args(&args)
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("oxbow: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Runs `oxbow serve` expecting it to refuse to start; returns its last stderr line.
fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    stderr.lines().last().unwrap_or_default().to_string()
}

/// A second broker on a port the first listens on (which SO_REUSEPORT alone would allow, and
/// then split the connections between them) or on the first's data directory does not start.
#[test]
fn a_port_or_data_directory_in_use_is_one_clear_error() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut broker = Broker::start(&["--data-dir", first.path().to_str().unwrap()]);
    let ready = broker.wait_for("oxbow ready");
    let (kafka, native) = (field(&ready, "kafka"), field(&ready, "native"));
    let second_dir = second.path().to_str().unwrap();
    for (kafka_listen, native_listen, setting, taken) in [
        (kafka.as_str(), "127.0.0.1:0", "kafka_listen", &kafka),
        ("127.0.0.1:0", native.as_str(), "native_listen", &native),
    ] {
        let line = refused(&[
            "--data-dir",
            second_dir,
            "--metrics-listen",
            "127.0.0.1:0",
            "--kafka-listen",
            kafka_listen,
            "--native-listen",
            native_listen,
        ]);
        assert!(line.starts_with("oxbow: "), "{line}");
        let expected = format!("{setting} {taken} is already in use");
        assert!(line.contains(&expected), "{line}");
    }
    let line = refused(&[
        "--data-dir",
        first.path().to_str().unwrap(),
        "--kafka-listen",
        "127.0.0.1:0",
        "--native-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    assert!(
        line.contains("data directory is in use by another process"),
        "{line}"
    );
    // The first broker never noticed: it still serves and stops cleanly.
    assert!(broker.signal(libc::SIGTERM).success());
}

/// Killed with connections open, a broker leaves them in TIME_WAIT on its own ports; started
/// again at once on the same ports it must not take them for another process's.
#[test]
fn a_broker_killed_with_connections_open_starts_again_at_once_on_the_same_ports() {
    let data = tempfile::tempdir().unwrap();
    let (args, addrs) = fixed_port_args(data.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut broker = Broker::start_exactly(None, &args);
    broker.wait_for("oxbow ready");
    let open: Vec<std::net::TcpStream> = addrs[..2]
        .iter()
        .map(|a| std::net::TcpStream::connect(a).unwrap())
        .collect();
    // The metrics endpoint closes its side first: TIME_WAIT on the broker's port.
    assert!(common::http_get(&addrs[2], "/metrics").contains("oxbow_"));
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    drop(open);
    let mut again = Broker::start_exactly(None, &args);
    let ready = again.wait_for("oxbow ready");
    assert_eq!(field(&ready, "kafka"), addrs[0]);
    assert!(again.signal(libc::SIGTERM).success());
}

/// The README's first command: no flags for the data directory, so `./oxbow-data` relative to
/// where it runs (glommio cannot sync directories opened by relative paths; this caught it).
#[test]
fn default_relative_data_dir_works_from_any_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(Some(cwd.path()), &[]);
    broker.wait_for("oxbow ready");
    assert!(broker.signal(libc::SIGTERM).success());
    assert!(cwd.path().join("oxbow-data").join(".oxbow").is_dir());
}
