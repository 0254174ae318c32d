//! Kafka Produce: check each partition's records as Kafka's log validator does, queue the
//! appends at their partitions, and answer once they are acknowledged.

use super::handlers::{partition_error_code, topic_name};
use super::metadata::ensure_topic;
use super::wire::{code, text};
use crate::authorize::Gate;
use crate::shard::{Acks, ProduceOutcome, Shard};
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use oxbow_cluster::Operation;
use oxbow_core::{BatchError, Codec, CompressionError, RecordBatch};
use std::sync::Arc;
use std::time::Duration;

/// First Produce version that may carry zstd batches (KIP-110); older ones are refused with
/// UNSUPPORTED_COMPRESSION_TYPE, as Kafka does.
const ZSTD_PRODUCE_VERSION_MIN: i16 = 7;

/// Why a partition's records were refused: an error code with the words for Produce v8+'s
/// `error_message`, and the records at fault (KIP-467's `record_errors`: index in the batch,
/// and why).
#[derive(Debug)]
struct Refusal {
    code: i16,
    message: Option<String>,
    record_errors: Vec<(i32, String)>,
}

impl Refusal {
    fn new(code: i16, message: Option<String>) -> Refusal {
        Refusal {
            code,
            message,
            record_errors: Vec::new(),
        }
    }
}

/// Kafka shows at most this many record errors in a refusal's message.
const RECORD_ERRORS_SHOWN: usize = 3;

/// A partition of a started Produce: where its outcome will come from, or why it was refused.
type PartitionStart = (i32, Result<flume::Receiver<ProduceOutcome>, Refusal>);

/// A Produce whose appends are queued at their partitions (offsets are assigned in the order
/// requests are started), waiting for them to be acknowledged.
pub struct StartedProduce {
    acks: i16,
    started: Vec<(String, Vec<PartitionStart>)>,
}

/// Splits a partition's `records` into batches and checks every record in them, so that what
/// is stored is what every reader (a Kafka consumer, a native subscription) can decode.
/// Compressed batches are decompressed to be checked, at most `batch_decompressed_bytes_max`
/// bytes each: a decompression bomb is refused here, before it reaches the log. `compacted`
/// names the partition (`topic-N`) when its topic is compacted: records without a key are
/// refused one by one, as Kafka's log validator does.
fn checked_batches(
    records: Bytes,
    version: i16,
    decompressed_bytes_max: u64,
    compacted: Option<&str>,
) -> Result<Vec<(RecordBatch, Codec)>, Refusal> {
    let refuse = |code, e: &dyn std::fmt::Display| Refusal::new(code, Some(e.to_string()));
    let batches = RecordBatch::parse_many(records).map_err(|e| match e {
        BatchError::UnsupportedMagic(_) => refuse(code::UNSUPPORTED_FOR_MESSAGE_FORMAT, &e),
        e => refuse(code::CORRUPT_MESSAGE, &e),
    })?;
    if batches.is_empty() {
        return Err(Refusal::new(
            code::CORRUPT_MESSAGE,
            Some("no record batch".into()),
        ));
    }
    let mut checked = Vec::with_capacity(batches.len());
    for batch in batches {
        let codec = batch
            .codec()
            .map_err(|e| refuse(code::CORRUPT_MESSAGE, &e))?;
        if codec == Codec::Zstd && version < ZSTD_PRODUCE_VERSION_MIN {
            let why = "zstd batches need Produce v7 or later";
            return Err(refuse(code::UNSUPPORTED_COMPRESSION_TYPE, &why));
        }
        batch
            .validate_records(decompressed_bytes_max)
            .map_err(|e| match e {
                BatchError::Decompression(CompressionError::TooLarge { .. }) => {
                    refuse(code::MESSAGE_TOO_LARGE, &e)
                }
                BatchError::BadRecordCount { .. } | BatchError::ControlBatch => {
                    refuse(code::INVALID_RECORD, &e)
                }
                e => refuse(code::CORRUPT_MESSAGE, &e),
            })?;
        if let Some(partition) = compacted {
            let keyless = (batch.keyless_records(decompressed_bytes_max))
                .map_err(|e| refuse(code::CORRUPT_MESSAGE, &e))?;
            if !keyless.is_empty() {
                return Err(keyless_refused(&keyless, partition));
            }
        }
        checked.push((batch, codec));
    }
    Ok(checked)
}

/// The refusal of a batch to a compacted topic whose records at `keyless` have no key, in
/// Kafka's words.
fn keyless_refused(keyless: &[u32], partition: &str) -> Refusal {
    let why = format!(
        "Compacted topic cannot accept message without key in topic partition {partition}."
    );
    let record_errors: Vec<(i32, String)> = keyless
        .iter()
        .map(|&index| (index as i32, why.clone()))
        .collect();
    let shown: Vec<String> = (record_errors.iter().take(RECORD_ERRORS_SHOWN))
        .map(|(index, why)| format!("RecordError(batchIndex={index}, message='{why}')"))
        .collect();
    let message = format!(
        "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
        record_errors.len(),
        shown.join(", ")
    );
    Refusal {
        code: code::INVALID_RECORD,
        message: Some(message),
        record_errors,
    }
}

/// Transactional batches are appended only inside their producer's open transaction that this
/// partition was added to, as the transaction coordinator says (KIP-890's verification): one
/// outside it would keep the partition's stable offset from moving for good.
async fn in_open_transaction(
    shard: &Shard,
    gate: &Gate<'_>,
    transactional_id: Option<&str>,
    batches: &[(RecordBatch, Codec)],
    (topic, partition): (&str, u32),
) -> Result<(), Refusal> {
    let Some((batch, _)) = batches.iter().find(|(b, _)| b.is_transactional()) else {
        return Ok(());
    };
    let producer = (batch.producer_id(), batch.producer_epoch());
    let mixed = (batches.iter())
        .any(|(b, _)| !b.is_transactional() || (b.producer_id(), b.producer_epoch()) != producer);
    let Some(id) = transactional_id.filter(|_| !mixed && producer.0 >= 0) else {
        let why = "transactional batches need the producer's transactional id, all of one producer";
        return Err(Refusal::new(code::INVALID_TXN_STATE, Some(why.into())));
    };
    if !gate.transactional_id(id, Operation::Write) {
        return Err(Refusal::new(
            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            None,
        ));
    }
    super::transactions::verify(shard, id, producer, topic, partition)
        .await
        // Kafka's answer to a producer when the coordinator cannot say: retriable.
        .map_err(|error| match error {
            code::NOT_COORDINATOR | code::COORDINATOR_NOT_AVAILABLE => code::NOT_ENOUGH_REPLICAS,
            other => other,
        })
        .map_err(|code| {
            let why =
                format!("not in an open transaction of {id} that {topic}-{partition} was added to");
            Refusal::new(code, Some(why))
        })
}

/// The shard layer's acks for Kafka's `acks` field (0, 1, or -1 for all).
fn kafka_acks(acks: i16) -> Acks {
    match acks {
        0 => Acks::None,
        1 => Acks::Leader,
        _ => Acks::All,
    }
}

/// Queues a Produce's appends and returns without waiting for them, so a connection can read its
/// next request while these reach the disk; answers still go out in request order.
pub async fn start_produce(
    shard: &Shard,
    gate: &Gate<'_>,
    request: ProduceRequest,
    version: i16,
) -> StartedProduce {
    let acks = request.acks;
    let timeout_ms = request.timeout_ms;
    let transactional_id = request.transactional_id.as_deref().map(|id| id.to_string());
    let limit = shard.config.batch_decompressed_bytes_max;
    // Start every partition's append before waiting for any, so they proceed in parallel.
    let mut started = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let arc: Arc<str> = Arc::from(name.as_str());
        let count = match gate.topic(&name, Operation::Write) {
            true => ensure_topic(shard, &name, || gate.may_create_topic(&name)).await,
            // Nothing is created or appended, and whether the topic exists is not told.
            false => Err(code::TOPIC_AUTHORIZATION_FAILED),
        };
        let compacted = count.is_ok() && shard.topic_compacts(&name);
        let mut partitions = Vec::new();
        for data in topic.partition_data {
            let label = compacted.then(|| format!("{name}-{}", data.index));
            let checked = match (&count, data.records) {
                (Err(code), _) => Err(Refusal::new(*code, None)),
                (Ok(n), _) if data.index < 0 || data.index as u32 >= *n => {
                    Err(Refusal::new(code::UNKNOWN_TOPIC_OR_PARTITION, None))
                }
                (Ok(_), None) => Err(Refusal::new(
                    code::CORRUPT_MESSAGE,
                    Some("no records".into()),
                )),
                (Ok(_), Some(records)) => {
                    checked_batches(records, version, limit, label.as_deref())
                }
            };
            let checked = match checked {
                Ok(checked) => {
                    let txn = transactional_id.as_deref();
                    let at = (name.as_str(), data.index as u32);
                    in_open_transaction(shard, gate, txn, &checked, at)
                        .await
                        .map(|()| checked)
                }
                Err(refusal) => Err(refusal),
            };
            let outcome = match checked {
                Ok(checked) => {
                    let metrics = crate::metrics::of(shard);
                    let batches = checked
                        .into_iter()
                        .map(|(batch, codec)| {
                            metrics.batch_produced(codec);
                            batch
                        })
                        .collect();
                    let partition = data.index as u32;
                    // Kafka's request timeout bounds the wait for the in-sync replicas.
                    let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
                    let acks = kafka_acks(acks);
                    Ok(shard
                        .send_produce_within(arc.clone(), partition, batches, acks, Some(timeout))
                        .await)
                }
                Err(refusal) => {
                    tracing::debug!(topic = %name, partition = data.index,
                        error = ?refusal.message, "rejected produce");
                    Err(refusal)
                }
            };
            partitions.push((data.index, outcome));
        }
        started.push((name, partitions));
    }
    StartedProduce { acks, started }
}

impl StartedProduce {
    /// Waits for every partition's outcome; `None` under acks=0, which gets no answer.
    pub async fn finish(self) -> Option<ProduceResponse> {
        let StartedProduce { acks, started } = self;
        let mut response = ProduceResponse::default();
        for (name, partitions) in started {
            let mut topic = TopicProduceResponse::default();
            topic.name = topic_name(&name);
            for (index, outcome) in partitions {
                let mut partition = PartitionProduceResponse::default();
                partition.index = index;
                partition.base_offset = -1;
                partition.log_append_time_ms = -1;
                partition.log_start_offset = -1;
                let result = match outcome {
                    Err(refusal) => Err(refusal),
                    Ok(reply) => match reply.recv_async().await {
                        Ok(Ok(done)) => Ok(done),
                        Ok(Err(e)) => {
                            Err(Refusal::new(partition_error_code(&e), Some(e.to_string())))
                        }
                        Err(_) => Err(Refusal::new(code::KAFKA_STORAGE_ERROR, None)),
                    },
                };
                match result {
                    Ok((base, start)) => {
                        partition.base_offset = base as i64;
                        partition.log_start_offset = start as i64;
                    }
                    Err(refusal) => {
                        partition.error_code = refusal.code;
                        partition.error_message = refusal.message.as_deref().map(text);
                        partition.record_errors = (refusal.record_errors.into_iter())
                            .map(|(index, why)| {
                                let mut error = BatchIndexAndErrorMessage::default();
                                error.batch_index = index;
                                error.batch_index_error_message = Some(text(&why));
                                error
                            })
                            .collect();
                    }
                }
                topic.partition_responses.push(partition);
            }
            response.responses.push(topic);
        }
        (acks != 0).then_some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::BatchBuilder;

    fn batch(codec: Codec, value: &[u8]) -> Bytes {
        let mut builder = BatchBuilder::new(0).compression(codec, None);
        builder.push(Some(b"k"), Some(value), 0);
        builder.build().into_bytes()
    }

    #[test]
    fn a_compacted_topic_refuses_records_without_a_key_one_by_one() {
        let mut b = BatchBuilder::new(0);
        b.push(Some(b"k"), Some(b"v"), 0);
        b.push(None, Some(b"v"), 0);
        b.push(None, None, 0);
        let records = b.build().into_bytes();
        assert!(checked_batches(records.clone(), 9, 1 << 20, None).is_ok());
        let refused = checked_batches(records, 9, 1 << 20, Some("t-0")).unwrap_err();
        assert_eq!(refused.code, code::INVALID_RECORD);
        let indexes: Vec<i32> = refused.record_errors.iter().map(|e| e.0).collect();
        assert_eq!(indexes, [1, 2]);
        assert!(refused.record_errors[0].1.contains("partition t-0"));
        assert!(refused.message.unwrap().contains("2 record errors"));
    }

    #[test]
    fn records_are_checked_as_kafka_checks_them() {
        for codec in Codec::ALL {
            assert!(
                checked_batches(batch(codec, b"v"), 9, 1 << 20, None).is_ok(),
                "{codec}"
            );
        }
        let bomb = batch(Codec::Lz4, &vec![b'x'; 4 << 20]);
        assert_eq!(
            checked_batches(bomb, 9, 1 << 20, None).unwrap_err().code,
            code::MESSAGE_TOO_LARGE
        );
        assert_eq!(
            checked_batches(batch(Codec::Zstd, b"v"), 6, 1 << 20, None)
                .unwrap_err()
                .code,
            code::UNSUPPORTED_COMPRESSION_TYPE
        );
        let mut damaged = batch(Codec::None, b"value").to_vec();
        let last = damaged.len() - 1;
        damaged[last] = 0x7f; // the header count now claims headers that are not there
        let crc = crc32c::crc32c(&damaged[21..]);
        damaged[17..21].copy_from_slice(&crc.to_be_bytes());
        let refused = checked_batches(Bytes::from(damaged), 9, 1 << 20, None).unwrap_err();
        assert_eq!(refused.code, code::CORRUPT_MESSAGE);
        assert!(refused.message.unwrap().contains("record 0"));
    }
}
