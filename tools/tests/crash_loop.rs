//! Crash loops: the real broker under load from real clients (a Kafka producer with acks=all,
//! a native producer with acks=1 under flush `always`, a reliable native consumer), killed with
//! SIGKILL at random moments and restarted on the same data directory, again and again.
//! After every restart it checks:
//! - every acknowledged message is present at its acknowledged offset with the same bytes;
//! - no offset that any reader ever saw holds different bytes later;
//! - each producer's messages are in send order within a partition;
//! - the reliable subscription's cursor never moves backwards past what was persisted, and
//!   never passes what the consumer acknowledged;
//! - a Kafka consumer group's committed offsets never move backwards past a commit the broker
//!   acknowledged (a confluent-kafka member commits synchronously all along).
//!
//! `OXBOW_CRASH_CYCLES=N` runs N cycles (default 20); `OXBOW_CRASH_SEED` replays a run.
//! The last line of the test's output reports cycles, messages checked and losses.

mod common;

use common::runtime;

use common::{field, Broker};
use oxbow_client::{Acks, Client, Mode, SubscriptionType};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 2;
const CONFIG: &str = "[log]\nflush = \"always\"\nsegment_bytes_max = 1048576\n\
                      [subscriptions]\ncursor_persist_interval_ms = 10\n";
/// Only a bound on a hung run.
const PATIENCE: Duration = Duration::from_secs(60);

type Log = BTreeMap<(u32, u64), Vec<u8>>;

fn start(dir: &std::path::Path) -> (Broker, String, String) {
    let mut broker = Broker::start(&[
        "--config",
        dir.join("oxbow.toml").to_str().unwrap(),
        "--data-dir",
        dir.join("data").to_str().unwrap(),
    ]);
    let ready = broker.wait_for("oxbow ready");
    (broker, field(&ready, "native"), field(&ready, "kafka"))
}

const GROUP: &str = "crash-group";

fn python_client(mode: &str, addr: &str) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/confluent_client.py"
        ))
        .args([
            mode,
            "--bootstrap",
            addr,
            "--topic",
            TOPIC,
            "--group",
            GROUP,
        ])
        .args(["--partitions", &PARTITIONS.to_string()]);
    command
}

/// A group member printing "msg <partition> <offset> <value>" after each acknowledged
/// synchronous commit of offset + 1.
fn group_member(addr: &str) -> Child {
    python_client("group-consume", addr)
        .args(["--expect", "1000000000", "--timeout-ms", "600000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with confluent-kafka (scripts/test installs it)")
}

/// The group's committed offset per partition (absent: nothing committed).
fn committed_offsets(addr: &str) -> HashMap<u32, u64> {
    let out = python_client("committed", addr).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
            ["committed", p, o] => Some((p.parse().ok()?, o.parse::<i64>().ok()?)),
            _ => None,
        })
        .filter_map(|(p, o)| Some((p, u64::try_from(o).ok()?)))
        .collect()
}

/// The Python confluent-kafka producer, printing "ack <partition> <offset> <value>".
fn kafka_producer(addr: &str, base: u64) -> Child {
    python_client("produce", addr)
        .args([
            "--acks",
            "all",
            "--base",
            &base.to_string(),
            "--count",
            "1000000",
        ])
        .args(["--timeout-ms", "5000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with confluent-kafka (scripts/test installs it)")
}

/// Reads the whole topic through a fresh reliable subscription (then deletes it).
async fn read_topic(client: &Client, name: &str) -> Log {
    let ends: Vec<u64> = client
        .describe_topic(TOPIC)
        .await
        .unwrap()
        .iter()
        .map(|p| p.log_end)
        .collect();
    let total: u64 = ends.iter().sum();
    let mut log = Log::new();
    if total > 0 {
        let mut consumer = client
            .consumer(TOPIC, name)
            .kind(SubscriptionType::Exclusive)
            .receiver_queue(10_000)
            .build()
            .await
            .unwrap();
        while (log.len() as u64) < total {
            let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(10_000))
                .await
                .expect("the log must be readable to its end")
                .unwrap();
            for m in &batch {
                log.insert((m.partition, m.offset), m.value.to_vec());
            }
            consumer.ack_all(&batch).unwrap();
        }
        consumer.unsubscribe().await.unwrap();
    }
    log
}

/// The reliable subscription's stored cursor per partition, read from the cursor logs while
/// the broker is down.
fn cursor_files(dir: &std::path::Path) -> HashMap<u32, u64> {
    (0..PARTITIONS)
        .filter_map(|p| {
            let cursors = common::stored_cursors(&dir.join("data"), TOPIC, p);
            Some((p, *cursors.get("reliable")?))
        })
        .collect()
}

#[derive(Default)]
struct Record {
    /// Every acknowledged produce: (partition, offset) → bytes.
    acked: Log,
    /// Every (partition, offset) a reader ever saw.
    seen: Log,
    /// Per partition: the highest persisted cursor observed before a kill.
    cursor_floor: HashMap<u32, u64>,
    /// Per partition: the highest offset the reliable consumer acknowledged, plus one.
    consumer_acked_end: HashMap<u32, u64>,
    /// Per partition: the highest group commit the broker acknowledged.
    commit_floor: Arc<Mutex<HashMap<u32, u64>>>,
}

fn verify(record: &mut Record, log: &Log, cycle: usize) -> u64 {
    for ((p, o), value) in &record.acked {
        let found = log.get(&(*p, *o));
        assert_eq!(
            found.map(Vec::as_slice),
            Some(value.as_slice()),
            "cycle {cycle}: acknowledged message {p}/{o} lost or changed"
        );
    }
    for (at, value) in log {
        let before = record.seen.entry(*at).or_insert_with(|| value.clone());
        assert_eq!(
            before, value,
            "cycle {cycle}: offset {at:?} reused for other bytes"
        );
    }
    // Within a partition, each producer's sequence numbers rise with the offset.
    let mut last: HashMap<(u32, String), u64> = HashMap::new();
    for ((p, o), value) in log {
        let text = String::from_utf8_lossy(value);
        let (stream, seq) = match text.rsplit_once('-') {
            Some((stream, seq)) => (stream.to_string(), seq.parse::<u64>().unwrap_or(0)),
            None => continue,
        };
        if let Some(previous) = last.insert((*p, stream.clone()), seq) {
            assert!(
                previous < seq,
                "cycle {cycle}: {stream} out of order at {p}/{o}"
            );
        }
    }
    record.acked.len() as u64
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("OXBOW_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("OXBOW_CRASH_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash loop: seed {seed} (OXBOW_CRASH_SEED replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oxbow.toml"), CONFIG).unwrap();
    let rt = runtime();
    let mut record = Record::default();
    let mut checked = 0;
    let (mut kafka_total, mut native_total, mut cursor_checks) = (0, 0, 0);
    let (mut commits_total, mut commit_checks) = (0usize, 0);
    for cycle in 0..=cycles {
        let (mut broker, native, kafka) = start(dir.path());
        let client = rt
            .block_on(Client::builder().broker(&native).connect())
            .unwrap();
        if cycle == 0 {
            rt.block_on(client.create_topic(TOPIC, PARTITIONS)).unwrap();
        } else {
            let log = rt.block_on(read_topic(&client, &format!("verify-{cycle}")));
            checked = verify(&mut record, &log, cycle);
            let subscriptions = rt.block_on(client.list_subscriptions(TOPIC)).unwrap();
            for s in subscriptions.iter().filter(|s| s.name == "reliable") {
                let floor = record.cursor_floor.get(&s.partition).copied().unwrap_or(0);
                let acked = record
                    .consumer_acked_end
                    .get(&s.partition)
                    .copied()
                    .unwrap_or(0);
                cursor_checks += 1;
                assert!(
                    s.cursor >= floor,
                    "cycle {cycle}: cursor {}/{} moved back below the persisted {floor}",
                    s.partition,
                    s.cursor
                );
                assert!(
                    s.cursor <= acked.max(floor),
                    "cycle {cycle}: cursor {} passed what was acknowledged ({acked})",
                    s.cursor
                );
            }
            let committed = committed_offsets(&kafka);
            for (p, floor) in record.commit_floor.lock().unwrap().iter() {
                commit_checks += 1;
                let now = committed.get(p).copied().unwrap_or(0);
                assert!(
                    now >= *floor,
                    "cycle {cycle}: group offset {p} at {now}, below the acknowledged commit {floor}"
                );
            }
        }
        if cycle == cycles {
            assert!(broker.signal(libc::SIGTERM).success());
            break;
        }
        // Load: a Kafka producer (acks=all), a native producer (acks=1 under flush always) and
        // a reliable consumer, until a random number of acknowledgements, then SIGKILL.
        let kill_after = rng.usize(200..3_000);
        let mut python = kafka_producer(&kafka, cycle as u64 * 1_000_000);
        let mut member = group_member(&kafka);
        let commits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let member_reader = {
            let stdout = member.stdout.take().unwrap();
            let (floor, commits) = (record.commit_floor.clone(), commits.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let ["msg", p, o, _] = line.splitn(4, ' ').collect::<Vec<_>>()[..] {
                        let (p, o): (u32, u64) = (p.parse().unwrap(), o.parse().unwrap());
                        let mut floor = floor.lock().unwrap();
                        let entry = floor.entry(p).or_default();
                        *entry = (*entry).max(o + 1);
                        commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        };
        let kafka_acks = Arc::new(Mutex::new(Vec::<(u32, u64, Vec<u8>)>::new()));
        let reader = {
            let stdout = python.stdout.take().unwrap();
            let kafka_acks = kafka_acks.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let parts: Vec<&str> = line.splitn(4, ' ').collect();
                    if let ["ack", p, o, value] = parts[..] {
                        kafka_acks.lock().unwrap().push((
                            p.parse().unwrap(),
                            o.parse().unwrap(),
                            value.as_bytes().to_vec(),
                        ));
                    }
                }
            })
        };
        let native_acks = rt.block_on(async {
            let producer = client
                .producer(TOPIC)
                .acks(Acks::Leader)
                .linger(Duration::from_millis(1))
                .build()
                .await
                .unwrap();
            let mut consumer = client
                .consumer(TOPIC, "reliable")
                .kind(SubscriptionType::Exclusive)
                .mode(Mode::Reliable)
                .build()
                .await
                .unwrap();
            let mut acks = Vec::new();
            let mut pending = std::collections::VecDeque::new();
            let mut seq = 0u64;
            // Both producers must have been acknowledged before the kill: the Kafka client
            // needs a moment to start.
            while acks.len() + kafka_acks.lock().unwrap().len() < kill_after
                || kafka_acks.lock().unwrap().len() < 20
                || commits.load(std::sync::atomic::Ordering::Relaxed) < 5
            {
                // A client that died (say, its library is missing) would leave this loop
                // waiting for its acknowledgements forever.
                for (name, child) in [
                    ("kafka producer", &mut python),
                    ("group member", &mut member),
                ] {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("cycle {cycle}: the {name} exited early ({status})");
                    }
                }
                for _ in 0..50 {
                    let value = format!("n{cycle}-{seq}");
                    seq += 1;
                    let sent = producer.send(None, value.as_bytes()).await.unwrap();
                    pending.push_back((value, sent));
                }
                while pending.len() > 500 {
                    let (value, sent) = pending.pop_front().unwrap();
                    let delivered = sent.await.unwrap();
                    acks.push((delivered.partition, delivered.offset.unwrap(), value));
                }
                if let Ok(Ok(batch)) =
                    tokio::time::timeout(Duration::from_millis(1), consumer.recv_batch(500)).await
                {
                    consumer.ack_all(&batch).unwrap();
                    for m in &batch {
                        let end = record.consumer_acked_end.entry(m.partition).or_default();
                        *end = (*end).max(m.offset + 1);
                    }
                }
            }
            acks
        });
        // What the broker says it has stored is a floor no restart may go below.
        let stored = rt.block_on(client.list_subscriptions(TOPIC)).unwrap();
        for s in stored.iter().filter(|s| s.name == "reliable") {
            let entry = record.cursor_floor.entry(s.partition).or_default();
            *entry = (*entry).max(s.persisted);
        }
        broker.child.kill().unwrap();
        broker.child.wait().unwrap();
        for child in [&mut python, &mut member] {
            let _ = child.kill();
            let _ = child.wait();
        }
        reader.join().unwrap();
        member_reader.join().unwrap();
        commits_total += commits.load(std::sync::atomic::Ordering::Relaxed);
        drop(client);
        // A cursor stored just before the kill raises the floor too.
        for (p, floor) in cursor_files(dir.path()) {
            let entry = record.cursor_floor.entry(p).or_default();
            *entry = (*entry).max(floor);
        }
        native_total += native_acks.len();
        kafka_total += kafka_acks.lock().unwrap().len();
        for (p, o, value) in native_acks {
            record.acked.insert((p, o), value.into_bytes());
        }
        for (p, o, value) in kafka_acks.lock().unwrap().drain(..) {
            record.acked.insert((p, o), value);
        }
    }
    eprintln!(
        "crash loop: {cycles} SIGKILL cycles; {checked} acknowledged messages ({kafka_total} Kafka \
         acks=all, {native_total} native acks=1) verified after every restart; {} offsets \
         compared across restarts; {cursor_checks} cursor checks; {commits_total} acknowledged \
         group commits, {commit_checks} committed-offset checks; 0 lost",
        record.seen.len()
    );
}

/// SIGSTOP freezes the broker: clients see timeouts, not errors in the data; after SIGCONT
/// everything acknowledged is there, in order, and the broker serves again.
#[test]
fn sigstop_gives_clients_timeouts_and_sigcont_resumes_with_nothing_damaged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oxbow.toml"), CONFIG).unwrap();
    let (mut broker, native, _) = start(dir.path());
    let rt = runtime();
    let connect = |timeout| {
        rt.block_on(
            Client::builder()
                .broker(&native)
                .request_timeout(timeout)
                .connect(),
        )
    };
    let client = connect(Duration::from_millis(500)).unwrap();
    rt.block_on(client.create_topic(TOPIC, PARTITIONS)).unwrap();
    let mut acked = Log::new();
    let produce = |client: &Client, from: u64, acked: &mut Log| {
        rt.block_on(async {
            let producer = client.producer(TOPIC).build().await?;
            for seq in from..from + 500 {
                let value = format!("s-{seq}");
                let delivered = producer.send(None, value.as_bytes()).await?.await?;
                acked.insert(
                    (delivered.partition, delivered.offset.unwrap()),
                    value.into_bytes(),
                );
            }
            Ok::<_, oxbow_client::ClientError>(())
        })
    };
    produce(&client, 0, &mut acked).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(broker.child.id() as i32, libc::SIGSTOP) },
        0
    );
    let frozen = produce(&client, 500, &mut acked).unwrap_err();
    assert!(
        matches!(frozen, oxbow_client::ClientError::Timeout(_)),
        "{frozen}"
    );
    assert!(matches!(
        connect(Duration::from_millis(300)),
        Err(oxbow_client::ClientError::Timeout(_))
    ));
    assert_eq!(
        unsafe { libc::kill(broker.child.id() as i32, libc::SIGCONT) },
        0
    );
    let client = connect(Duration::from_secs(30)).unwrap();
    produce(&client, 1_000, &mut acked).unwrap();
    let log = rt.block_on(read_topic(&client, "after-sigcont"));
    let mut record = Record {
        acked,
        ..Record::default()
    };
    verify(&mut record, &log, 0);
    assert!(broker.signal(libc::SIGTERM).success());
}

/// A clean SIGTERM keeps every cursor exactly where it was: after the restart nothing that was
/// acknowledged comes again, and everything that was not comes once, as a first delivery.
#[test]
fn sigterm_keeps_cursors_exactly_and_redelivers_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("oxbow.toml"),
        "[subscriptions]\ncursor_persist_interval_ms = 600000\n",
    )
    .unwrap();
    let (mut broker, native, _) = start(dir.path());
    let rt = runtime();
    let (before, acked) = rt.block_on(async {
        let client = Client::builder().broker(&native).connect().await.unwrap();
        client.create_topic(TOPIC, PARTITIONS).await.unwrap();
        let producer = client.producer(TOPIC).build().await.unwrap();
        for i in 0..5_000u32 {
            let key = format!("k{}", i % 7);
            producer
                .send(Some(key.as_bytes()), &i.to_le_bytes())
                .await
                .unwrap();
        }
        producer.flush().await.unwrap();
        let mut consumer = client
            .consumer(TOPIC, "durable")
            .kind(SubscriptionType::Shared)
            .build()
            .await
            .unwrap();
        // Acknowledge every other message of the first 3,000 received: ranges above the
        // cursor must survive too.
        let mut acked = std::collections::BTreeSet::new();
        let mut received = 0;
        while received < 3_000 {
            let batch = consumer.recv_batch(500).await.unwrap();
            for m in batch.iter().filter(|m| m.offset % 2 == 0) {
                consumer.ack(m).unwrap();
                acked.insert((m.partition, m.offset));
            }
            received += batch.len();
        }
        consumer.close().await.unwrap();
        let before = client.list_subscriptions(TOPIC).await.unwrap();
        (before, acked)
    });
    // The interval is ten minutes: only the shutdown can have written these cursors.
    assert!(broker.signal(libc::SIGTERM).success());
    let (_broker, native, _) = start(dir.path());
    rt.block_on(async {
        let client = Client::builder().broker(&native).connect().await.unwrap();
        let after = client.list_subscriptions(TOPIC).await.unwrap();
        let cursors = |list: &[oxbow_client::SubscriptionInfo]| -> Vec<(u32, u64)> {
            list.iter().map(|s| (s.partition, s.cursor)).collect()
        };
        assert_eq!(cursors(&after), cursors(&before));
        let mut consumer = client
            .consumer(TOPIC, "durable")
            .kind(SubscriptionType::Shared)
            .build()
            .await
            .unwrap();
        let mut again = std::collections::BTreeSet::new();
        while again.len() + acked.len() < 5_000 {
            let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(1_000))
                .await
                .unwrap()
                .unwrap();
            for m in &batch {
                assert_eq!(m.redeliveries, 0, "a redelivery after a clean shutdown");
                assert!(
                    !acked.contains(&(m.partition, m.offset)),
                    "acked message came again"
                );
                assert!(again.insert((m.partition, m.offset)), "delivered twice");
            }
            consumer.ack_all(&batch).unwrap();
        }
    });
}
