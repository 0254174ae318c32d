//! Kafka Produce: check each partition's records as Kafka's log validator does, queue the
//! appends at their partitions, and answer once they are acknowledged.

use super::handlers::{partition_error_code, topic_name};
use super::metadata::ensure_topic;
use super::wire::{code, text};
use crate::authorize::Gate;
use crate::shard::{Acks, ProduceOutcome, Shard};
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use oxbow_cluster::Operation;
use oxbow_core::{BatchError, Codec, CompressionError, RecordBatch};
use std::sync::Arc;
use std::time::Duration;

/// First Produce version that may carry zstd batches (KIP-110); older ones are refused with
/// UNSUPPORTED_COMPRESSION_TYPE, as Kafka does.
const ZSTD_PRODUCE_VERSION_MIN: i16 = 7;

/// An error code with the words for Produce v8+'s `error_message`.
type Refusal = (i16, Option<String>);

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
/// bytes each: a decompression bomb is refused here, before it reaches the log.
fn checked_batches(
    records: Bytes,
    version: i16,
    decompressed_bytes_max: u64,
) -> Result<Vec<(RecordBatch, Codec)>, Refusal> {
    let refuse = |code, e: &dyn std::fmt::Display| (code, Some(e.to_string()));
    let batches = RecordBatch::parse_many(records).map_err(|e| match e {
        BatchError::UnsupportedMagic(_) => refuse(code::UNSUPPORTED_FOR_MESSAGE_FORMAT, &e),
        e => refuse(code::CORRUPT_MESSAGE, &e),
    })?;
    if batches.is_empty() {
        return Err((code::CORRUPT_MESSAGE, Some("no record batch".into())));
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
                BatchError::Transactional => refuse(code::INVALID_TXN_STATE, &e),
                e => refuse(code::CORRUPT_MESSAGE, &e),
            })?;
        checked.push((batch, codec));
    }
    Ok(checked)
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
        let mut partitions = Vec::new();
        for data in topic.partition_data {
            let checked = match (&count, data.records) {
                (Err(code), _) => Err((*code, None)),
                (Ok(n), _) if data.index < 0 || data.index as u32 >= *n => {
                    Err((code::UNKNOWN_TOPIC_OR_PARTITION, None))
                }
                (Ok(_), None) => Err((code::CORRUPT_MESSAGE, Some("no records".into()))),
                (Ok(_), Some(records)) => checked_batches(records, version, limit),
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
                    tracing::debug!(topic = %name, partition = data.index, error = ?refusal.1,
                        "rejected produce");
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
                        Ok(Err(e)) => Err((partition_error_code(&e), Some(e.to_string()))),
                        Err(_) => Err((code::KAFKA_STORAGE_ERROR, None)),
                    },
                };
                match result {
                    Ok((base, start)) => {
                        partition.base_offset = base as i64;
                        partition.log_start_offset = start as i64;
                    }
                    Err((code, message)) => {
                        partition.error_code = code;
                        partition.error_message = message.as_deref().map(text);
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
    fn records_are_checked_as_kafka_checks_them() {
        for codec in Codec::ALL {
            assert!(
                checked_batches(batch(codec, b"v"), 9, 1 << 20).is_ok(),
                "{codec}"
            );
        }
        let bomb = batch(Codec::Lz4, &vec![b'x'; 4 << 20]);
        assert_eq!(
            checked_batches(bomb, 9, 1 << 20).unwrap_err().0,
            code::MESSAGE_TOO_LARGE
        );
        assert_eq!(
            checked_batches(batch(Codec::Zstd, b"v"), 6, 1 << 20)
                .unwrap_err()
                .0,
            code::UNSUPPORTED_COMPRESSION_TYPE
        );
        let mut damaged = batch(Codec::None, b"value").to_vec();
        let last = damaged.len() - 1;
        damaged[last] = 0x7f; // the header count now claims headers that are not there
        let crc = crc32c::crc32c(&damaged[21..]);
        damaged[17..21].copy_from_slice(&crc.to_be_bytes());
        let (code, message) = checked_batches(Bytes::from(damaged), 9, 1 << 20).unwrap_err();
        assert_eq!(code, code::CORRUPT_MESSAGE);
        assert!(message.unwrap().contains("record 0"));
    }
}
