//! The shard runtime on real executors: topics created through shard 0 reach every shard,
//! requests to a partition's owner append and read across shards, a fetch at the log end waits
//! for data, and everything survives a stop and restart.

use oxbow_core::control::TRANSACTIONAL_BIT;
use oxbow_core::placement::owner_shard;
use oxbow_core::{BatchBuilder, BrokerConfig, MarkerKind, RecordBatch, TxnMarker};
use oxbow_net::shard::{
    Acks, CreateTopicError, FetchOutcome, FetchPart, PartitionError, ProduceOutcome, RemoteWork,
};
use oxbow_net::{Runtime, ShardMessage};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const SHARDS: usize = 2;
const TOPIC: &str = "orders";
const PARTITIONS: u32 = 4;

fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        shards: SHARDS,
        kafka_listen: "127.0.0.1:0".into(),
        metrics_listen: "127.0.0.1:0".into(),
        native_listen: "127.0.0.1:0".into(),
        ..BrokerConfig::default()
    }
}

fn ask<T>(
    runtime: &Runtime,
    shard: usize,
    build: impl FnOnce(flume::Sender<T>) -> ShardMessage,
) -> T {
    let (tx, rx) = flume::bounded(1);
    runtime.inbox(shard).send(build(tx)).unwrap();
    rx.recv().unwrap()
}

fn owner(partition: u32) -> usize {
    owner_shard(TOPIC, partition, SHARDS)
}

fn message(partition: u32, i: u32) -> RecordBatch {
    let mut builder = BatchBuilder::new(1_000 + i as i64);
    builder.push(
        Some(b"k"),
        Some(format!("p{partition}-m{i}").as_bytes()),
        1_000 + i as i64,
    );
    builder.build()
}

fn produce(runtime: &Runtime, shard: usize, partition: u32, batch: RecordBatch) -> ProduceOutcome {
    let topic: Arc<str> = Arc::from(TOPIC);
    ask(runtime, shard, |reply| ShardMessage::Produce {
        topic,
        partition,
        batches: vec![batch],
        acks: Acks::All,
        timeout: None,
        reply,
    })
}

/// A fetch message for `partition` at `offset`, answering on `reply`.
fn fetch_message(
    partition: u32,
    offset: u64,
    max_wait: Duration,
    reply: flume::Sender<(usize, FetchOutcome)>,
) -> ShardMessage {
    isolated_fetch_message(partition, offset, max_wait, false, reply)
}

/// [`fetch_message`] with Kafka's isolation: `read_committed` or not.
fn isolated_fetch_message(
    partition: u32,
    offset: u64,
    max_wait: Duration,
    read_committed: bool,
    reply: flume::Sender<(usize, FetchOutcome)>,
) -> ShardMessage {
    // Never stops waiting early: its sender is kept by nobody, so keep one alive here.
    let (keep, stop_waiting) = flume::bounded(1);
    std::mem::forget(keep);
    ShardMessage::Fetch {
        part: FetchPart {
            topic: Arc::from(TOPIC),
            partition,
            offset,
            max_bytes: 1 << 20,
            read_committed,
        },
        max_wait,
        stop_waiting,
        reply,
        slot: 0,
    }
}

fn fetch(runtime: &Runtime, partition: u32, offset: u64, max_wait: Duration) -> FetchOutcome {
    ask(runtime, owner(partition), |reply| {
        fetch_message(partition, offset, max_wait, reply)
    })
    .1
}

fn value_of(batch: &RecordBatch) -> String {
    let record = batch.records(u64::MAX).unwrap().next().unwrap().unwrap();
    String::from_utf8(record.value.unwrap().to_vec()).unwrap()
}

#[test]
fn topics_produce_fetch_and_restart_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(config(dir.path())).unwrap();
    let create = |name: &str, partitions: i64| {
        let name = name.to_string();
        ask(&runtime, 0, |reply| ShardMessage::CreateTopic {
            name,
            partitions,
            configs: Vec::new(),
            internal: false,
            replication_factor: 1,
            reply,
        })
    };
    create(TOPIC, PARTITIONS as i64).unwrap();
    assert_eq!(create(TOPIC, 2), Err(CreateTopicError::Exists));
    assert!(matches!(
        create("bad/name", 1),
        Err(CreateTopicError::InvalidName(_))
    ));
    assert_eq!(
        create("empty", 0),
        Err(CreateTopicError::InvalidPartitions(0, 10_000))
    );
    assert_eq!(
        create("huge", 10_001),
        Err(CreateTopicError::InvalidPartitions(10_001, 10_000))
    );
    for shard in 0..SHARDS {
        let topics: BTreeMap<String, u32> = ask(&runtime, shard, |reply| {
            ShardMessage::DescribeTopics { reply }
        });
        assert_eq!(
            topics.get(TOPIC),
            Some(&PARTITIONS),
            "shard {shard} missed the topic"
        );
    }
    // Both shards own partitions, so requests really cross threads.
    assert!((0..PARTITIONS).any(|p| owner(p) == 0) && (0..PARTITIONS).any(|p| owner(p) == 1));

    for p in 0..PARTITIONS {
        for i in 0..10 {
            let (base, _) = produce(&runtime, owner(p), p, message(p, i)).unwrap();
            assert_eq!(base, i as u64);
        }
        // Only the owner holds a partition: a request sent elsewhere is refused, not lost.
        let other = (owner(p) + 1) % SHARDS;
        assert_eq!(
            produce(&runtime, other, p, message(p, 99)),
            Err(PartitionError::UnknownTopicOrPartition)
        );
    }
    let fetched = fetch(&runtime, 3, 0, Duration::ZERO);
    assert_eq!(fetched.high_watermark, 10);
    assert_eq!(
        fetched.batches.iter().map(value_of).collect::<Vec<_>>(),
        (0..10).map(|i| format!("p3-m{i}")).collect::<Vec<_>>()
    );

    // A fetch at the log end is answered when data arrives, well inside its wait.
    let waiting = {
        let inbox = runtime.inbox(owner(1)).clone();
        std::thread::spawn(move || {
            let (tx, rx) = flume::bounded(1);
            inbox
                .send(fetch_message(1, 10, Duration::from_secs(60), tx))
                .unwrap();
            rx.recv().unwrap().1
        })
    };
    // Keep producing until the waiting fetch has answered: it must see data, not a timeout.
    let mut i = 10;
    while !waiting.is_finished() {
        produce(&runtime, owner(1), 1, message(1, i)).unwrap();
        i += 1;
        assert!(i < 100_000, "the waiting fetch never answered");
    }
    let woken = waiting.join().unwrap();
    assert_eq!(
        woken.batches.first().map(value_of).as_deref(),
        Some("p1-m10")
    );

    let offsets = |ts: i64| {
        let topic: Arc<str> = Arc::from(TOPIC);
        ask(&runtime, owner(2), |reply| ShardMessage::ListOffset {
            topic,
            partition: 2,
            timestamp: ts,
            read_committed: false,
            reply,
        })
    };
    assert_eq!(offsets(-2).unwrap().0, 0);
    assert_eq!(offsets(-1).unwrap().0, 10);
    assert_eq!(offsets(1_004).unwrap(), (4, 1_004));
    assert_eq!(offsets(9_999).unwrap().0, -1);
    runtime.stop().unwrap();

    // Restart: the topic table comes back from disk, and so does every message.
    let runtime = Runtime::start(config(dir.path())).unwrap();
    assert_eq!(runtime.partitions(), PARTITIONS as usize);
    let topics: BTreeMap<String, u32> =
        ask(&runtime, 1, |reply| ShardMessage::DescribeTopics { reply });
    assert_eq!(topics.get(TOPIC), Some(&PARTITIONS));
    for p in [0, 2, 3] {
        let fetched = fetch(&runtime, p, 0, Duration::ZERO);
        assert_eq!(fetched.batches.len(), 10, "partition {p}");
        assert_eq!(value_of(&fetched.batches[9]), format!("p{p}-m9"));
    }
    assert!(fetch(&runtime, 1, 0, Duration::ZERO).high_watermark >= 11);
    let beyond = fetch(&runtime, 0, 11, Duration::ZERO);
    assert_eq!(beyond.error, Some(PartitionError::OffsetOutOfRange));
    runtime.stop().unwrap();
}

/// A transactional producer's batch, or the marker ending its transaction.
fn transactional(producer_id: i64, sequence: i32, end: Option<MarkerKind>) -> RecordBatch {
    match end {
        Some(kind) => TxnMarker {
            kind,
            coordinator_epoch: 0,
        }
        .batch(producer_id, 0, 2_000),
        None => {
            let mut builder = BatchBuilder::new(2_000)
                .producer(producer_id, 0, sequence)
                .attributes(TRANSACTIONAL_BIT);
            builder.push(
                Some(b"k"),
                Some(format!("txn-{producer_id}").as_bytes()),
                2_000,
            );
            builder.build()
        }
    }
}

/// Kafka's isolation on the shards: a `read_committed` fetch stops at the last stable offset
/// (the first batch of the oldest open transaction), waits there for a marker, and lists the
/// aborted transactions among what it returns; ListOffsets' latest is the stable offset too.
/// (Clients cannot write transactions yet; the test writes batches and markers as the
/// coordinator will.)
#[test]
fn read_committed_fetches_stop_at_the_stable_offset_and_list_aborted_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(config(dir.path())).unwrap();
    let name = TOPIC.to_string();
    ask(&runtime, 0, |reply| ShardMessage::CreateTopic {
        name,
        partitions: PARTITIONS as i64,
        configs: Vec::new(),
        internal: false,
        replication_factor: 1,
        reply,
    })
    .unwrap();
    let shard = owner(0);
    let mut offsets = Vec::new();
    for batch in [
        message(0, 0),
        transactional(1, 0, None),
        transactional(2, 0, None),
        message(0, 1),
    ] {
        offsets.push(produce(&runtime, shard, 0, batch).unwrap().0);
    }
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    let isolated = |offset: u64, committed: bool, max_wait: Duration| {
        ask(&runtime, shard, |reply| {
            isolated_fetch_message(0, offset, max_wait, committed, reply)
        })
        .1
    };
    let latest = |committed: bool| {
        let topic: Arc<str> = Arc::from(TOPIC);
        ask(&runtime, shard, |reply| ShardMessage::ListOffset {
            topic,
            partition: 0,
            timestamp: -1,
            read_committed: committed,
            reply,
        })
        .unwrap()
        .0
    };
    let committed = isolated(0, true, Duration::ZERO);
    assert_eq!(committed.batches.len(), 1);
    assert_eq!(
        (committed.last_stable_offset, committed.high_watermark),
        (1, 4)
    );
    let uncommitted = isolated(0, false, Duration::ZERO);
    assert_eq!(uncommitted.batches.len(), 4);
    assert_eq!(uncommitted.last_stable_offset, 1);
    assert_eq!((latest(true), latest(false)), (1, 4));
    // Past the stable offset a read_committed reader gets nothing, and no error.
    let ahead = isolated(3, true, Duration::ZERO);
    assert!(ahead.batches.is_empty() && ahead.error.is_none());

    produce(
        &runtime,
        shard,
        0,
        transactional(1, 1, Some(MarkerKind::Abort)),
    )
    .unwrap();
    assert_eq!(latest(true), 2, "producer 2 is still open");
    // A reader at the stable offset waits for it to move rather than answering empty.
    let (reply, waiting) = flume::bounded(1);
    let long_poll = isolated_fetch_message(0, 2, Duration::from_secs(60), true, reply);
    runtime.inbox(shard).send(long_poll).unwrap();
    assert_eq!(latest(true), 2);
    assert!(
        waiting.try_recv().is_err(),
        "answered before the transaction ended"
    );
    produce(
        &runtime,
        shard,
        0,
        transactional(2, 1, Some(MarkerKind::Commit)),
    )
    .unwrap();
    let woken = waiting.recv().unwrap().1;
    assert_eq!(woken.batches.first().map(|b| b.base_offset()), Some(2));
    assert_eq!(woken.last_stable_offset, 6);
    // Producer 1's aborted transaction overlaps what it read (offsets 1 to 4).
    let aborted: Vec<(i64, u64)> = (woken.aborted.iter())
        .map(|a| (a.producer_id, a.first_offset))
        .collect();
    assert_eq!(aborted, vec![(1, 1)]);
    let from_start = isolated(0, true, Duration::ZERO);
    assert_eq!(from_start.batches.len(), 6);
    assert_eq!(from_start.aborted.len(), 1);
    assert!(isolated(5, true, Duration::ZERO).aborted.is_empty());
    assert!(isolated(0, false, Duration::ZERO).aborted.is_empty());
    runtime.stop().unwrap();
}

#[test]
fn a_shard_that_stops_taking_work_fails_the_liveness_probe_until_it_takes_work_again() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(config(dir.path())).unwrap();
    let liveness = runtime.liveness();
    assert!(liveness.all_answer_within(Duration::from_secs(10)));
    // Shard 1's executor blocks its thread, as a runaway loop or a stuck system call would,
    // until released.
    let (blocked, is_blocked) = flume::bounded::<()>(1);
    let (release, released) = flume::bounded::<()>(1);
    let block: RemoteWork = Box::new(move |_shard| {
        Box::pin(async move {
            blocked.send(()).unwrap();
            let _ = released.recv();
        })
    });
    runtime.inbox(1).send(ShardMessage::Run(block)).unwrap();
    is_blocked.recv().unwrap();
    assert!(!liveness.all_answer_within(Duration::from_millis(200)));
    release.send(()).unwrap();
    assert!(liveness.all_answer_within(Duration::from_secs(10)));
    drop(liveness);
    runtime.stop().unwrap();
}
