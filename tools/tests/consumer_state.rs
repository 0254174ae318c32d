//! Consumer state in logs. Committed group offsets in `__consumer_offsets`: a storm of a
//! million commits leaves the group's offsets partition bounded and every last commit readable
//! after kill -9, and the private offsets log of older data directories is moved into the
//! topic at start. Subscription cursors: cursor files of older data directories are moved
//! into the partition's cursor log.

mod common;

use common::{field, kafka_call, Broker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, OffsetFetchResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_net::kafka::groups::offsets_partition;
use std::net::TcpStream;
use std::path::Path;

const COMMITS_PER_REQUEST: i32 = 1_000;
const REQUESTS: i64 = 1_000;
/// `offsets_topic_partitions` of the broker (Kafka's default).
const OFFSETS_PARTITIONS: u32 = 50;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Commits `offset` for partitions 0..COMMITS_PER_REQUEST of `topic` as a simple consumer.
fn commit(stream: &mut TcpStream, group: &str, topic: &str, offset: i64) {
    let partitions = (0..COMMITS_PER_REQUEST)
        .map(|index| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(partitions)]);
    let answer = kafka_call(stream, 8, &request);
    let errors: Vec<i16> = answer.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .filter(|&e| e != 0)
        .collect();
    assert!(errors.is_empty(), "commit refused: {errors:?}");
}

fn fetch(stream: &mut TcpStream, group: &str, topic: &str) -> OffsetFetchResponse {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partition_indexes((0..COMMITS_PER_REQUEST).collect())]));
    kafka_call(stream, 7, &request)
}

fn committed_offsets(answer: &OffsetFetchResponse) -> Vec<i64> {
    assert_eq!(answer.error_code, 0);
    answer.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

/// Bytes of the files in `dir` (a file compaction deletes while it is listed counts as 0).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

fn start(data: &Path) -> (Broker, String) {
    let mut broker = Broker::start(&["--data-dir", data.to_str().unwrap(), "--shards", "2"]);
    let kafka = field(&broker.wait_for("oxbow ready"), "kafka");
    (broker, kafka)
}

/// The native address a started broker announced.
fn native_addr(broker: &Broker) -> String {
    let ready = (broker.seen.iter()).find(|l| l.contains("oxbow ready"));
    field(ready.expect("the broker is ready"), "native")
}

#[test]
fn a_million_commits_leave_the_offsets_partition_bounded_and_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, kafka) = start(dir.path());
    let mut stream = TcpStream::connect(&kafka).unwrap();
    // Commits name partitions that exist (others are refused, as Kafka does).
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(60_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(text("t")))
            .with_num_partitions(COMMITS_PER_REQUEST)
            .with_replication_factor(1)]);
    let created = kafka_call(&mut stream, 5, &create);
    assert_eq!(created.topics[0].error_code, 0);
    let group = "storm";
    let partition_dir = dir
        .path()
        .join("__consumer_offsets")
        .join(offsets_partition(group, OFFSETS_PARTITIONS).to_string());
    let mut largest = 0;
    for offset in 0..REQUESTS {
        commit(&mut stream, group, "t", offset);
        largest = largest.max(dir_bytes(&partition_dir));
    }
    let last = vec![REQUESTS - 1; COMMITS_PER_REQUEST as usize];
    assert_eq!(committed_offsets(&fetch(&mut stream, group, "t")), last);
    // Uncompacted, a million commits take over 40 MB. The bound: the compaction threshold
    // (8 MiB), two 1 MiB segments and two copies of the live state, with room for indexes.
    let bound = 12 << 20;
    assert!(
        largest < bound,
        "the offsets partition reached {largest} bytes"
    );
    eprintln!(
        "{} commits, largest offsets partition {largest} bytes",
        REQUESTS * COMMITS_PER_REQUEST as i64
    );

    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    let (_broker, kafka) = start(dir.path());
    let mut stream = TcpStream::connect(&kafka).unwrap();
    assert_eq!(committed_offsets(&fetch(&mut stream, group, "t")), last);
}

/// Writes a private offsets log the way brokers before `__consumer_offsets` did: records of
/// (u16 group, u16 topic, i32 partition) → (i64 offset, metadata), later ones winning.
fn write_legacy_offsets(data: &Path, commits: Vec<(&'static str, i32, i64)>) {
    let dir = data.join(".oxbow").join("group-offsets");
    let data = data.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&data, "legacy")
                .await
                .unwrap();
            let config = oxbow_core::LogConfig {
                flush: oxbow_core::FlushPolicy::Always,
                ..oxbow_core::LogConfig::default()
            };
            let log = oxbow_storage::Partition::open(&dir, config, Default::default())
                .await
                .unwrap();
            for (group, partition, offset) in commits {
                let mut key = Vec::new();
                for part in [group, "orders"] {
                    key.extend((part.len() as u16).to_be_bytes());
                    key.extend(part.as_bytes());
                }
                key.extend(partition.to_be_bytes());
                let mut batch = oxbow_core::BatchBuilder::new(0);
                batch.push(Some(&key), Some(&offset.to_be_bytes()), 0);
                log.append(batch.build()).await.unwrap();
            }
            log.close().await;
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn offsets_of_an_older_data_directory_move_into_the_offsets_topic() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy_offsets(
        dir.path(),
        vec![
            ("billing", 0, 10),
            ("billing", 1, 20),
            ("audit", 0, 5),
            ("billing", 0, 11),
        ],
    );
    let (_broker, kafka) = start(dir.path());
    assert!(!dir.path().join(".oxbow").join("group-offsets").exists());
    let mut stream = TcpStream::connect(&kafka).unwrap();
    let offsets = |stream: &mut TcpStream, group: &str| {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text("orders")))
                .with_partition_indexes(vec![0, 1])]));
        committed_offsets(&kafka_call(stream, 7, &request))
    };
    assert_eq!(offsets(&mut stream, "billing"), vec![11, 20]);
    assert_eq!(offsets(&mut stream, "audit"), vec![5, -1]);
}

#[test]
fn cursor_files_of_an_older_data_directory_move_into_the_cursor_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (mut broker, _) = start(data);
    let native = native_addr(&broker);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = oxbow_client::Client::builder()
            .broker(&native)
            .connect()
            .await
            .unwrap();
        client.create_topic("ledger", 1).await.unwrap();
        let producer = client.producer("ledger").build().await.unwrap();
        for i in 0..10u32 {
            let sent = producer.send(None, &i.to_be_bytes()).await.unwrap();
            producer.flush().await.unwrap();
            sent.await.unwrap();
        }
    });
    assert!(broker.signal(libc::SIGTERM).success());
    // What a broker before cursor logs left: one file per subscription and partition.
    let cursors = data.join("ledger").join(".subscriptions").join("0");
    std::fs::create_dir_all(&cursors).unwrap();
    let cursor = oxbow_dispatch::CursorState {
        kind: oxbow_client::SubscriptionType::Exclusive,
        mark_delete: 7,
        acked: vec![(8, 9)],
        skipped: Vec::new(),
        dispatch_rate: Default::default(),
    };
    std::fs::write(cursors.join("audit.cursor"), cursor.encode()).unwrap();

    let (mut broker, _) = start(data);
    let native = native_addr(&broker);
    let listed = runtime.block_on(async {
        let client = oxbow_client::Client::builder()
            .broker(&native)
            .connect()
            .await
            .unwrap();
        client.list_subscriptions("ledger").await.unwrap()
    });
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].cursor), ("audit", 7));
    assert!(!cursors.join("audit.cursor").exists());
    assert!(broker.signal(libc::SIGTERM).success());
    assert_eq!(common::stored_cursors(data, "ledger", 0)["audit"], 7);
}
