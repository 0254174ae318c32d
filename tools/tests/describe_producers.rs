//! DescribeProducers against the real broker: after an idempotent confluent-kafka producer
//! wrote to two partitions, each partition's leader reports that producer with its last
//! sequence; unknown partitions and topics get UNKNOWN_TOPIC_OR_PARTITION.

mod common;

use common::{confluent, field, kafka_call, Broker};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{DescribeProducersRequest, TopicName};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

#[test]
fn each_partition_reports_the_idempotent_producer_that_wrote_to_it() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&["--data-dir", data.path().to_str().unwrap()]);
    let kafka = field(&broker.wait_for("oxbow ready"), "kafka");
    let args = [
        "produce",
        "--bootstrap",
        &kafka,
        "--topic",
        "ledger",
        "--partitions",
        "2",
        "--create",
        "--count",
        "100",
        "--acks",
        "all",
        "--idempotent",
    ];
    let acked = confluent(&args);
    assert_eq!(acked.lines().filter(|l| l.starts_with("ack ")).count(), 100);

    let topic = |name: &str, partitions: Vec<i32>| {
        TopicRequest::default()
            .with_name(TopicName(name.to_string().into()))
            .with_partition_indexes(partitions)
    };
    let request = DescribeProducersRequest::default().with_topics(vec![
        topic("ledger", vec![0, 1, 5]),
        topic("nowhere", vec![0]),
    ]);
    let mut stream = std::net::TcpStream::connect(&kafka).unwrap();
    let response = kafka_call(&mut stream, 0, &request);
    let ledger = &response.topics[0].partitions;
    let mut ids = Vec::new();
    for partition in &ledger[..2] {
        assert_eq!(partition.error_code, 0);
        let [producer] = partition.active_producers.as_slice() else {
            panic!("one producer: {partition:?}");
        };
        // Messages alternate between the partitions: 50 each, sequences 0..=49.
        assert_eq!(producer.last_sequence, 49, "{producer:?}");
        assert!(producer.producer_id.0 >= 0 && producer.producer_epoch >= 0);
        assert!(producer.last_timestamp > 0);
        assert_eq!(producer.current_txn_start_offset, -1);
        ids.push(producer.producer_id);
    }
    assert_eq!(ids[0], ids[1], "the same producer wrote both");
    assert_eq!(ledger[2].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        response.topics[1].partitions[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert!(broker.signal(libc::SIGTERM).success());
}
