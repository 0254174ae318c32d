//! Topic metadata end to end: a created topic is whole on every shard the moment its creation
//! is answered, topic ids are Kafka's (stable across kill -9, new after a delete), and a data
//! directory that has lost its metadata file is adopted again with its data.

mod common;

use common::{field, kafka_call, start_broker, Broker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest, MetadataResponse, ProduceRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_client::{Acks, Client};
use std::net::TcpStream;

const PARTITIONS: u32 = 8;
const REPETITIONS: usize = 100;

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn create_topic(addr: &str, topic: &str, partitions: u32) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions as i32)
            .with_replication_factor(1)]);
    let answer = kafka_call(&mut stream, 5, &request);
    assert_eq!(answer.topics[0].error_code, 0, "creating {topic}");
}

fn one_record() -> bytes::Bytes {
    let mut batch = oxbow_core::BatchBuilder::new(0);
    batch.push(None, Some(b"first"), 0);
    batch.build().into_bytes()
}

/// One Produce (acks=all) with a batch for every partition of `topic`; the partitions' error
/// codes and base offsets.
fn produce_everywhere(stream: &mut TcpStream, topic: &str, partitions: u32) -> Vec<(i16, i64)> {
    let data = (0..partitions as i32)
        .map(|index| {
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(one_record()))
        })
        .collect();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(data)]);
    let mut answer = kafka_call(stream, 9, &request);
    let mut partitions = answer.responses.remove(0).partition_responses;
    partitions.sort_by_key(|p| p.index);
    partitions
        .iter()
        .map(|p| (p.error_code, p.base_offset))
        .collect()
}

fn metadata_of(stream: &mut TcpStream, topic: MetadataRequestTopic) -> MetadataResponse {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![topic]))
        .with_allow_auto_topic_creation(false);
    kafka_call(stream, 12, &request)
}

fn by_name(topic: &str) -> MetadataRequestTopic {
    MetadataRequestTopic::default().with_name(Some(name(topic)))
}

/// Two shards, so the creation (serialised on shard 0) and the next connection often land on
/// different shards: the first request on a new connection, with no retry and no metadata
/// refresh, must find every partition, over both protocols, every time.
#[test]
fn a_created_topic_takes_produces_on_every_partition_from_a_new_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&["--data-dir", dir.path().to_str().unwrap(), "--shards", "2"]);
    let ready = broker.wait_for("oxbow ready");
    let (kafka, native) = (field(&ready, "kafka"), field(&ready, "native"));
    for rep in 0..REPETITIONS {
        let topic = format!("kafka-{rep}");
        create_topic(&kafka, &topic, PARTITIONS);
        let mut stream = TcpStream::connect(&kafka).unwrap();
        let answers = produce_everywhere(&mut stream, &topic, PARTITIONS);
        assert_eq!(answers, vec![(0, 0); PARTITIONS as usize], "{topic}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // One key per partition, so one message lands on each.
        let keys: Vec<String> = (0..PARTITIONS)
            .map(|p| {
                (0u32..)
                    .map(|k| format!("key-{k}"))
                    .find(|k| {
                        oxbow_client::partitioner::partition_for_key(k.as_bytes(), PARTITIONS) == p
                    })
                    .unwrap()
            })
            .collect();
        for rep in 0..REPETITIONS {
            let topic = format!("native-{rep}");
            let admin = Client::builder().broker(&native).connect().await.unwrap();
            admin.create_topic(&topic, PARTITIONS).await.unwrap();
            let client = Client::builder().broker(&native).connect().await.unwrap();
            let producer = client
                .producer(&topic)
                .acks(Acks::All)
                .build()
                .await
                .unwrap();
            let mut pending = Vec::new();
            for key in &keys {
                pending.push(producer.send(Some(key.as_bytes()), b"first").await.unwrap());
            }
            producer.flush().await.unwrap();
            let mut delivered = Vec::new();
            for outcome in pending {
                let outcome = outcome.await.unwrap();
                delivered.push((outcome.partition, outcome.offset));
            }
            delivered.sort();
            let expected: Vec<_> = (0..PARTITIONS).map(|p| (p, Some(0))).collect();
            assert_eq!(delivered, expected, "{topic}");
        }
    });
}

fn kill_9(mut broker: Broker) {
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
}

fn topic_id(answer: &MetadataResponse) -> uuid::Uuid {
    assert_eq!(answer.topics[0].error_code, 0);
    answer.topics[0].topic_id
}

#[test]
fn topic_ids_survive_kill_9_and_a_recreated_topic_gets_a_new_id_and_no_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start_broker(dir.path(), 2);
    create_topic(&kafka, "ids", 4);
    let mut stream = TcpStream::connect(&kafka).unwrap();
    let first = topic_id(&metadata_of(&mut stream, by_name("ids")));
    assert!(!first.is_nil());
    assert_eq!(produce_everywhere(&mut stream, "ids", 4), vec![(0, 0); 4]);
    kill_9(broker);

    let (_broker, kafka) = start_broker(dir.path(), 2);
    let mut stream = TcpStream::connect(&kafka).unwrap();
    let answer = metadata_of(&mut stream, by_name("ids"));
    assert_eq!(topic_id(&answer), first);
    let partitions = &answer.topics[0].partitions;
    assert_eq!(partitions.len(), 4);
    assert!(partitions
        .iter()
        .all(|p| p.leader_id.0 == 0 && p.isr_nodes.len() == 1));
    // Asked by id alone (v12), the topic is found with its name; an unknown id is refused.
    let by_id = metadata_of(
        &mut stream,
        MetadataRequestTopic::default()
            .with_name(None)
            .with_topic_id(first),
    );
    assert_eq!(by_id.topics[0].name, Some(name("ids")));
    let unknown = MetadataRequestTopic::default()
        .with_name(None)
        .with_topic_id(uuid::Uuid::from_u128(42));
    assert_eq!(metadata_of(&mut stream, unknown).topics[0].error_code, 100);
    // The data survived the kill: the next batch lands after the first.
    assert_eq!(produce_everywhere(&mut stream, "ids", 4), vec![(0, 1); 4]);

    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("ids")])
        .with_timeout_ms(30_000);
    assert_eq!(
        kafka_call(&mut stream, 4, &delete).responses[0].error_code,
        0
    );
    create_topic(&kafka, "ids", 4);
    let second = topic_id(&metadata_of(&mut stream, by_name("ids")));
    assert_ne!(second, first);
    assert_eq!(produce_everywhere(&mut stream, "ids", 4), vec![(0, 0); 4]);
}

#[test]
fn a_data_directory_that_lost_its_metadata_is_adopted_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start_broker(dir.path(), 1);
    create_topic(&kafka, "kept", 3);
    let mut stream = TcpStream::connect(&kafka).unwrap();
    assert_eq!(produce_everywhere(&mut stream, "kept", 3), vec![(0, 0); 3]);
    kill_9(broker);
    std::fs::remove_dir_all(dir.path().join(".oxbow").join("metadata")).unwrap();

    let mut broker = Broker::start(&["--data-dir", dir.path().to_str().unwrap(), "--shards", "1"]);
    broker.wait_for("metadata created from the data directory");
    let kafka = field(&broker.wait_for("oxbow ready"), "kafka");
    let mut stream = TcpStream::connect(&kafka).unwrap();
    let answer = metadata_of(&mut stream, by_name("kept"));
    assert!(!topic_id(&answer).is_nil());
    assert_eq!(answer.topics[0].partitions.len(), 3);
    assert_eq!(produce_everywhere(&mut stream, "kept", 3), vec![(0, 1); 3]);
}

/// The cluster is named once, by Kafka's rules, and keeps its name across kill -9; another
/// data directory is another cluster. A replication factor beyond the brokers is refused with
/// Kafka's error and message.
#[test]
fn the_cluster_id_is_kept_across_kill_9_and_replication_factors_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, kafka) = start_broker(dir.path(), 1);
    let mut stream = TcpStream::connect(&kafka).unwrap();
    let first = metadata_of(&mut stream, by_name("absent"))
        .cluster_id
        .unwrap();
    assert_eq!(first.len(), 22, "{first}");
    kill_9(broker);
    let (_broker, kafka) = start_broker(dir.path(), 1);
    let mut stream = TcpStream::connect(&kafka).unwrap();
    let again = metadata_of(&mut stream, by_name("absent"));
    assert_eq!(again.cluster_id.unwrap(), first);
    assert_eq!(again.brokers.len(), 1);

    // Another cluster, in a rack: Metadata says where this broker stands.
    let other = tempfile::tempdir().unwrap();
    let (_other, other_kafka, _) =
        common::start_broker_with_config(other.path(), "shards = 1\nrack = \"rack-b\"\n");
    let mut other_stream = TcpStream::connect(&other_kafka).unwrap();
    let other_answer = metadata_of(&mut other_stream, by_name("absent"));
    assert_ne!(other_answer.cluster_id.unwrap(), first);
    let rack = other_answer.brokers[0].rack.as_ref().map(|r| r.to_string());
    assert_eq!(rack.as_deref(), Some("rack-b"));

    for (factor, refused) in [(3, true), (0, true), (-1, false), (1, false)] {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(&format!("rf{factor}")))
                .with_num_partitions(1)
                .with_replication_factor(factor)]);
        let answer = kafka_call(&mut stream, 5, &request).topics.remove(0);
        match refused {
            true => assert_eq!(
                answer.error_code, 38,
                "INVALID_REPLICATION_FACTOR for {factor}"
            ),
            false => assert_eq!(answer.error_code, 0, "{:?}", answer.error_message),
        }
        if factor == 3 {
            let message = answer.error_message.unwrap().to_string();
            assert_eq!(
                message,
                "Replication factor: 3 larger than available brokers: 1."
            );
        }
    }
}
