//! DeleteRecords through confluent-kafka's AdminClient against the real broker: the log start
//! moves to the offset asked for (inside a batch of many records, -1 meaning the high
//! watermark), readers from the beginning start there, lookups by time answer nothing below
//! it, an offset past the end is refused, and all of it holds after kill -9 of the broker.
//! Unknown topics and partitions get UNKNOWN_TOPIC_OR_PARTITION; internal topics INVALID_TOPIC.
//! Needs python3 with confluent-kafka (scripts/test installs it).

mod common;

use common::{confluent, kafka_call, segment_count, start_broker};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::{DeleteRecordsRequest, TopicName};

const TOPIC: &str = "trimmed";
/// Records over both partitions: record i goes to partition i % 2, at offset i / 2.
const RECORDS: i64 = 40_000;
/// Milliseconds between two records' timestamps.
const STEP: i64 = 10;
/// Where partition 0 is cut: inside a batch (the producer lingers, so batches hold many).
const START: i64 = 12_345;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC: i16 = 17;

/// Deletes below each (partition, offset); the answer lines.
fn delete(addr: &str, below: &[(u32, i64)]) -> Vec<String> {
    let mut args = vec![
        "admin",
        "--op",
        "delete-records",
        "--bootstrap",
        addr,
        "--topic",
        TOPIC,
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for (partition, offset) in below {
        args.extend(["--delete".to_string(), format!("{partition}={offset}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    confluent(&args).lines().map(str::to_string).collect()
}

/// Reads both partitions from offset 0 (out of range now: the consumer resets to the log
/// start) until `expect` records came; (partition, offset, value) in arrival order.
fn consume(addr: &str, expect: i64) -> Vec<(u32, i64, String)> {
    let expect = expect.to_string();
    let args = [
        "consume",
        "--bootstrap",
        addr,
        "--topic",
        TOPIC,
        "--partitions",
        "2",
        "--expect",
        &expect,
    ];
    (confluent(&args).lines())
        .filter_map(|l| l.strip_prefix("msg "))
        .map(|l| {
            let mut parts = l.split(' ');
            let partition = parts.next().unwrap().parse().unwrap();
            let offset = parts.next().unwrap().parse().unwrap();
            (partition, offset, parts.next().unwrap().to_string())
        })
        .collect()
}

/// Partition 0's answers to offsets_for_times for each of `times`.
fn offsets_for_times(addr: &str, times: &[i64]) -> Vec<i64> {
    let times: Vec<String> = times.iter().map(i64::to_string).collect();
    let mut args = vec!["offsets-for-times", "--bootstrap", addr, "--topic", TOPIC];
    for at in &times {
        args.extend(["--at", at]);
    }
    (confluent(&args).lines())
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// What a reader from the beginning gets, and lookups by time, with partition 0 starting at
/// START and partition 1 emptied.
fn assert_deleted(addr: &str, base: i64) {
    let kept = RECORDS / 2 - START;
    let read = consume(addr, kept);
    assert!(read.iter().all(|(p, _, _)| *p == 0), "partition 1 is empty");
    let offsets: Vec<i64> = read.iter().map(|(_, o, _)| *o).collect();
    assert_eq!(offsets, (START..RECORDS / 2).collect::<Vec<_>>());
    assert_eq!(read[0].2, format!("m-{}", START * 2));
    // Record 2o is at offset o of partition 0, stamped base + 2o * STEP.
    let at = |offset: i64| base + offset * 2 * STEP;
    assert_eq!(
        offsets_for_times(addr, &[base, at(START - 1), at(START), at(15_000) - 1]),
        vec![START, START, START, 15_000]
    );
}

#[test]
fn deleted_records_are_gone_for_readers_and_stay_gone_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start_broker(dir.path(), 2);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - RECORDS * STEP;
    let (count, base_arg) = (RECORDS.to_string(), base.to_string());
    // Many records per batch (linger), segments of 64 KiB: several rolls per partition.
    confluent(&[
        "produce",
        "--bootstrap",
        &addr,
        "--topic",
        TOPIC,
        "--partitions",
        "2",
        "--create",
        "--config",
        "max.message.bytes=32768",
        "--config",
        "segment.bytes=65536",
        "--batch-bytes",
        "30000",
        "--count",
        &count,
        "--linger-ms",
        "50",
        "--timestamp-base",
        &base_arg,
        "--timestamp-step",
        &STEP.to_string(),
    ]);
    let partition_dir = dir.path().join(TOPIC).join("0");
    let segments = segment_count(&partition_dir);
    assert!(
        segments > 3,
        "the records span several segments ({segments})"
    );

    let end = RECORDS / 2;
    assert_eq!(
        delete(&addr, &[(0, START), (1, -1)]),
        [format!("deleted 0 {START}"), format!("deleted 1 {end}")]
    );
    assert!(
        segment_count(&partition_dir) < segments,
        "segments wholly below the start are deleted"
    );
    // Below the start changes nothing; past the end is refused.
    assert_eq!(
        delete(&addr, &[(0, 100), (1, 5)]),
        [format!("deleted 0 {START}"), format!("deleted 1 {end}")]
    );
    assert_eq!(
        delete(&addr, &[(0, end + 1)]),
        ["error 0 OFFSET_OUT_OF_RANGE"]
    );
    assert_deleted(&addr, base);

    // Unknown topics and partitions, and the internal topic, straight on the wire.
    let topic = |name: &str, partitions: &[i32]| {
        DeleteRecordsTopic::default()
            .with_name(TopicName(name.to_string().into()))
            .with_partitions(
                (partitions.iter())
                    .map(|&p| {
                        DeleteRecordsPartition::default()
                            .with_partition_index(p)
                            .with_offset(0)
                    })
                    .collect(),
            )
    };
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            topic(TOPIC, &[2]),
            topic("nowhere", &[0]),
            topic("__consumer_offsets", &[0]),
        ]);
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    let answer = kafka_call(&mut stream, 2, &request);
    let codes: Vec<(i16, i64)> = (answer.topics.iter())
        .map(|t| (t.partitions[0].error_code, t.partitions[0].low_watermark))
        .collect();
    assert_eq!(
        codes,
        [
            (UNKNOWN_TOPIC_OR_PARTITION, -1),
            (UNKNOWN_TOPIC_OR_PARTITION, -1),
            (INVALID_TOPIC, -1)
        ]
    );

    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    let (_broker, addr) = start_broker(dir.path(), 2);
    assert_deleted(&addr, base);
    assert_eq!(
        delete(&addr, &[(0, 0), (1, 0)]),
        [format!("deleted 0 {START}"), format!("deleted 1 {end}")],
        "the log starts where they were deleted"
    );
}
