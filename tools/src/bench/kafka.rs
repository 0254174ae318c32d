//! The bench's Kafka-protocol client: the few requests a load generator needs (CreateTopics,
//! DeleteTopics, Metadata, ListOffsets, Produce, Fetch), encoded with the `kafka-protocol`
//! crate over a tokio socket, plain or TLS (`--tls-ca`, see `tls`), with SASL for the
//! Kafka-side commands (`sasl`). Producers pipeline up to
//! `--in-flight` Produce requests on one connection (the broker answers in order); consumers
//! are statically assigned partitions (partition p goes to consumer p mod C), so no group
//! protocol sits in the measured path.

use super::meter::{now_ns, Meter};
use super::plan::Plan;
use super::tls::{self, ReadHalf, Stream, Tls, WriteHalf};
use crate::access::{self, KafkaAccess};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic,
    fetch_request::{FetchPartition, FetchTopic},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    produce_request::{PartitionProduceData, TopicProduceData},
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest, ListOffsetsRequest,
    MetadataRequest, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use oxbow_core::{BatchBuilder, RecordBatch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const LIST_OFFSETS_VERSION: i16 = 7;
const METADATA_VERSION: i16 = 12;
const CREATE_TOPICS_VERSION: i16 = 5;
const DELETE_TOPICS_VERSION: i16 = 4;
/// Kafka error codes the bench tells apart.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// A response larger than this is a broken peer, not a big fetch.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// How long a fetch waits for data before the broker answers empty.
const FETCH_WAIT_MS: i32 = 100;
const FETCH_PARTITION_BYTES_MAX: i32 = 4 * 1024 * 1024;
const FETCH_BYTES_MAX: i32 = 32 * 1024 * 1024;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn encode<R: Request>(correlation_id: i32, version: i16, request: &R) -> Result<Bytes, String> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("oxbow-bench")));
    let mut body = BytesMut::new();
    body.put_i32(0);
    header
        .encode(&mut body, R::header_version(version))
        .and_then(|()| request.encode(&mut body, version))
        .map_err(|e| format!("encoding a Kafka request: {e}"))?;
    let length = (body.len() - 4) as i32;
    body[..4].copy_from_slice(&length.to_be_bytes());
    Ok(body.freeze())
}

/// Writes a whole request. The flush costs nothing on plain TCP; over TLS it sends the
/// records rustls still holds when the socket was full.
async fn send(writer: &mut (impl AsyncWriteExt + Unpin), frame: &[u8]) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

async fn read_frame(reader: &mut (impl AsyncReadExt + Unpin)) -> Result<Bytes, String> {
    let length = reader
        .read_i32()
        .await
        .map_err(|e| format!("reading a Kafka response: {e}"))?;
    if length < 0 || length as usize > RESPONSE_BYTES_MAX {
        // A TLS listener answers a plaintext request with an alert record: 0x15, 0x03, ...
        let hint = match length.to_be_bytes() {
            [0x15 | 0x16, 0x03, ..] => " (a TLS record: is this an SSL listener?)",
            _ => "",
        };
        return Err(format!("Kafka response of {length} bytes{hint}"));
    }
    let mut frame = vec![0u8; length as usize];
    reader
        .read_exact(&mut frame)
        .await
        .map_err(|e| format!("reading a Kafka response: {e}"))?;
    Ok(Bytes::from(frame))
}

fn decode<R: Request>(mut frame: Bytes, version: i16) -> Result<(i32, R::Response), String> {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .map_err(|e| format!("decoding a Kafka response header: {e}"))?;
    let response = R::Response::decode(&mut frame, version)
        .map_err(|e| format!("decoding a Kafka response: {e}"))?;
    Ok((header.correlation_id, response))
}

/// One connection for request/response calls (admin and fetch).
pub struct Connection {
    stream: Stream,
    correlation_id: i32,
    /// How it was opened, for [`open_to`](Self::open_to).
    access: KafkaAccess,
}

impl Connection {
    /// A connection as `access` says: TLS, then SASL, each if given.
    pub async fn open(addr: &str, access: &KafkaAccess) -> Result<Connection, String> {
        let mut connection = Connection::connect(addr, access.tls.as_ref()).await?;
        connection.access = access.clone();
        if let Some(credentials) = &access.sasl {
            access::authenticate(&mut connection, credentials)
                .await
                .map_err(|e| format!("authenticating to {addr}: {e}"))?;
        }
        Ok(connection)
    }

    /// A connection to another broker, opened the way this one was.
    pub async fn open_to(&self, addr: &str) -> Result<Connection, String> {
        Connection::open(addr, &self.access).await
    }

    /// A connection over TLS when `tls` is given, else plaintext, without SASL.
    pub async fn connect(addr: &str, tls: Option<&Tls>) -> Result<Connection, String> {
        Ok(Connection {
            stream: tls::connect(addr, tls).await?,
            correlation_id: 0,
            access: KafkaAccess {
                tls: tls.cloned(),
                sasl: None,
            },
        })
    }

    /// Ends the connection; over TLS, says so first (close_notify), so the broker does not
    /// log a truncated stream.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }

    pub async fn call<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, String> {
        self.correlation_id += 1;
        let frame = encode(self.correlation_id, version, request)?;
        send(&mut self.stream, &frame)
            .await
            .map_err(|e| format!("sending a Kafka request: {e}"))?;
        let (id, response) = decode::<R>(read_frame(&mut self.stream).await?, version)?;
        if id != self.correlation_id {
            return Err(format!(
                "Kafka response for request {id}, expected {}",
                self.correlation_id
            ));
        }
        Ok(response)
    }

    /// Creates the topic; `Ok(false)` if it exists already.
    pub async fn create_topic(&mut self, name: &str, partitions: u32) -> Result<bool, String> {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(partitions as i32)
                .with_replication_factor(1)])
            .with_timeout_ms(30_000);
        let response = self.call(CREATE_TOPICS_VERSION, &request).await?;
        match response
            .topics
            .first()
            .map(|t| (t.error_code, &t.error_message))
        {
            Some((0, _)) => Ok(true),
            Some((TOPIC_ALREADY_EXISTS, _)) => Ok(false),
            Some((code, message)) => Err(format!(
                "creating topic {name}: Kafka error {code} {}",
                message.as_deref().unwrap_or("")
            )),
            None => Err(format!("creating topic {name}: empty answer")),
        }
    }

    pub async fn delete_topic(&mut self, name: &str) -> Result<(), String> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name(name)])
            .with_timeout_ms(30_000);
        let response = self.call(DELETE_TOPICS_VERSION, &request).await?;
        match response.responses.first().map(|r| r.error_code) {
            Some(0) => Ok(()),
            code => Err(format!("deleting topic {name}: Kafka error {code:?}")),
        }
    }

    /// The topic's partition count.
    pub async fn partitions(&mut self, name: &str) -> Result<u32, String> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(name)))
            ]))
            .with_allow_auto_topic_creation(false);
        let response = self.call(METADATA_VERSION, &request).await?;
        match response.topics.first() {
            Some(topic) if topic.error_code == 0 => Ok(topic.partitions.len() as u32),
            Some(topic) => Err(format!(
                "topic {name}: Kafka error {} (does it exist?)",
                topic.error_code
            )),
            None => Err(format!("topic {name}: not in the metadata")),
        }
    }

    /// Log end (`latest`) or log start (`earliest`) of each partition.
    async fn offsets(
        &mut self,
        name: &str,
        partitions: &[u32],
        earliest: bool,
    ) -> Result<Vec<i64>, String> {
        let timestamp = if earliest { -2 } else { -1 };
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(name))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p as i32)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let response = self.call(LIST_OFFSETS_VERSION, &request).await?;
        let answers = response
            .topics
            .first()
            .map(|t| t.partitions.as_slice())
            .unwrap_or_default();
        partitions
            .iter()
            .map(
                |&p| match answers.iter().find(|a| a.partition_index == p as i32) {
                    Some(a) if a.error_code == 0 => Ok(a.offset),
                    Some(a) => Err(format!(
                        "offsets of {name}/{p}: Kafka error {}",
                        a.error_code
                    )),
                    None => Err(format!("offsets of {name}/{p}: no answer")),
                },
            )
            .collect()
    }
}

/// Acknowledged batches' send times travel from the writer to the reader in this order.
struct InFlight {
    correlation_id: i32,
    intended_ns: Vec<u64>,
}

struct OpenBatch {
    builder: BatchBuilder,
    intended_ns: Vec<u64>,
    opened: Instant,
}

/// A pipelining producer on one connection.
pub struct Producer {
    writer: WriteHalf,
    answers: Option<tokio::sync::mpsc::Sender<InFlight>>,
    reader: tokio::task::JoinHandle<Result<(), String>>,
    meter: Arc<Meter>,
    topic: String,
    partitions: u32,
    next_partition: u32,
    acks: i16,
    batch_bytes: usize,
    message_bytes: usize,
    codec: oxbow_core::Codec,
    compression_level: Option<i32>,
    correlation_id: i32,
    open: Option<OpenBatch>,
}

impl Producer {
    pub async fn open(plan: &Plan, index: usize, meter: Arc<Meter>) -> Result<Producer, String> {
        let connection = Connection::connect(&plan.broker, plan.tls.as_ref()).await?;
        let (reader, writer) = connection.stream.into_split();
        let acks = match plan.acks.as_str() {
            "0" => 0,
            "1" => 1,
            _ => -1,
        };
        let (answers, pending) = tokio::sync::mpsc::channel(plan.in_flight);
        let reader = tokio::spawn(read_answers(
            reader,
            pending,
            meter.clone(),
            plan.message_size,
        ));
        Ok(Producer {
            writer,
            answers: (acks != 0).then_some(answers),
            reader,
            meter,
            topic: plan.topic.clone(),
            partitions: plan.partitions,
            // Producers start on different partitions, then move on one batch at a time
            // (the "sticky" partitioning of Kafka's clients for keyless messages).
            next_partition: index as u32 % plan.partitions,
            acks,
            batch_bytes: plan.batch_bytes,
            message_bytes: plan.message_size,
            codec: plan.codec,
            compression_level: plan.compression_level,
            correlation_id: 0,
            open: None,
        })
    }

    /// When the open batch started, if one is open.
    pub fn open_since(&self) -> Option<Instant> {
        self.open.as_ref().map(|b| b.opened)
    }

    /// Adds a message; sends the batch first if it would overflow.
    pub async fn push(&mut self, payload: &[u8], intended_ns: u64) -> Result<(), String> {
        if self
            .open
            .as_ref()
            .is_some_and(|b| b.builder.size_bytes() + payload.len() > self.batch_bytes)
        {
            self.flush().await?;
        }
        let batch = self.open.get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new((now_ns() / 1_000_000) as i64)
                .compression(self.codec, self.compression_level),
            intended_ns: Vec::new(),
            opened: Instant::now(),
        });
        batch
            .builder
            .push(None, Some(payload), (intended_ns / 1_000_000) as i64);
        batch.intended_ns.push(intended_ns);
        Ok(())
    }

    /// Sends the open batch, waiting first if `--in-flight` batches are unanswered.
    pub async fn flush(&mut self) -> Result<(), String> {
        let Some(batch) = self.open.take() else {
            return Ok(());
        };
        let partition = self.next_partition;
        self.next_partition = (self.next_partition + 1) % self.partitions;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let records: RecordBatch = batch.builder.build();
        let request = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(&self.topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition as i32)
                    .with_records(Some(records.into_bytes()))])]);
        let frame = encode(self.correlation_id, PRODUCE_VERSION, &request)?;
        let unanswered = match &self.answers {
            Some(answers) => {
                let in_flight = InFlight {
                    correlation_id: self.correlation_id,
                    intended_ns: batch.intended_ns,
                };
                if answers.send(in_flight).await.is_err() {
                    return Err(super::task_failure(&mut self.reader).await);
                }
                None
            }
            None => Some(batch.intended_ns),
        };
        send(&mut self.writer, &frame)
            .await
            .map_err(|e| format!("sending a Produce request: {e}"))?;
        if let Some(intended_ns) = unanswered {
            self.meter
                .sent_unacknowledged(&intended_ns, self.message_bytes);
        }
        Ok(())
    }

    /// Sends what is open and waits for every answer.
    pub async fn close(mut self) -> Result<(), String> {
        self.flush().await?;
        drop(self.answers.take());
        let answered = if self.acks == 0 {
            self.reader.abort();
            Ok(())
        } else {
            super::task_result(&mut self.reader).await
        };
        let _ = self.writer.shutdown().await;
        answered
    }
}

async fn read_answers(
    mut reader: ReadHalf,
    mut pending: tokio::sync::mpsc::Receiver<InFlight>,
    meter: Arc<Meter>,
    message_bytes: usize,
) -> Result<(), String> {
    while let Some(sent) = pending.recv().await {
        let frame = read_frame(&mut reader).await?;
        let (id, response) = decode::<ProduceRequest>(frame, PRODUCE_VERSION)?;
        if id != sent.correlation_id {
            return Err(format!(
                "Produce answer {id}, expected {}",
                sent.correlation_id
            ));
        }
        check_produce(&response)?;
        meter.published(&sent.intended_ns, message_bytes);
    }
    Ok(())
}

fn check_produce(response: &ProduceResponse) -> Result<(), String> {
    for topic in &response.responses {
        for partition in &topic.partition_responses {
            if partition.error_code != 0 {
                return Err(format!(
                    "Produce to partition {} refused: Kafka error {} {}",
                    partition.index,
                    partition.error_code,
                    partition.error_message.as_deref().unwrap_or("")
                ));
            }
        }
    }
    Ok(())
}

/// A consumer fetching its share of the partitions until `keep_going` says stop.
pub struct Consumer {
    connection: Connection,
    topic: String,
    positions: Vec<(u32, i64)>,
}

impl Consumer {
    /// Connects and finds its start offsets (consumer `index` of `count`).
    pub async fn open(plan: &Plan, index: usize, count: usize) -> Result<Consumer, String> {
        let mut connection = Connection::connect(&plan.broker, plan.tls.as_ref()).await?;
        let mine: Vec<u32> = (0..plan.partitions)
            .filter(|p| *p as usize % count == index)
            .collect();
        let offsets = if mine.is_empty() {
            Vec::new()
        } else {
            connection
                .offsets(&plan.topic, &mine, plan.from_earliest)
                .await?
        };
        Ok(Consumer {
            connection,
            topic: plan.topic.clone(),
            positions: mine.into_iter().zip(offsets).collect(),
        })
    }

    /// Ends the connection (see [`Connection::close`]).
    pub async fn close(self) {
        self.connection.close().await;
    }

    /// One Fetch over every assigned partition; returns how many messages arrived.
    pub async fn poll(&mut self, meter: &Meter) -> Result<u64, String> {
        if self.positions.is_empty() {
            tokio::time::sleep(Duration::from_millis(FETCH_WAIT_MS as u64)).await;
            return Ok(0);
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(FETCH_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(&self.topic))
                .with_partitions(
                    self.positions
                        .iter()
                        .map(|&(p, offset)| {
                            FetchPartition::default()
                                .with_partition(p as i32)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX)
                        })
                        .collect(),
                )]);
        let response = self.connection.call(FETCH_VERSION, &request).await?;
        if response.error_code != 0 {
            return Err(format!(
                "Fetch refused: Kafka error {}",
                response.error_code
            ));
        }
        let mut received = 0;
        for topic in response.responses {
            for partition in topic.partitions {
                if partition.error_code != 0 {
                    return Err(format!(
                        "Fetch of partition {} refused: Kafka error {}",
                        partition.partition_index, partition.error_code
                    ));
                }
                let Some(position) = self
                    .positions
                    .iter_mut()
                    .find(|(p, _)| *p as i32 == partition.partition_index)
                else {
                    continue;
                };
                let records = partition.records.unwrap_or_default();
                received += consume_batches(records, position, meter)?;
            }
        }
        Ok(received)
    }
}

/// Records every whole batch in `records` (a Kafka fetch may end in a partial one) and moves
/// the position past them.
fn consume_batches(
    mut records: Bytes,
    position: &mut (u32, i64),
    meter: &Meter,
) -> Result<u64, String> {
    let damaged =
        |e: &dyn std::fmt::Display| format!("a fetched batch of partition {}: {e}", position.0);
    let mut received = 0;
    loop {
        let size = match oxbow_core::batch::batch_size_hint(&records) {
            None => break,
            Some(Err(e)) => return Err(damaged(&e)),
            Some(Ok(size)) if size as usize > records.len() => break,
            Some(Ok(size)) => size as usize,
        };
        let batch = RecordBatch::parse(records.split_to(size)).map_err(|e| damaged(&e))?;
        let mut values = Vec::with_capacity(batch.records_count().max(0) as usize);
        let limit = oxbow_core::config::BATCH_DECOMPRESSED_BYTES_LIMIT;
        for record in batch.records(limit).map_err(|e| damaged(&e))? {
            let record = record.map_err(|e| damaged(&e))?;
            // A fetch may start inside a batch: skip what was consumed before.
            if record.offset as i64 >= position.1 {
                values.extend(record.value);
            }
        }
        received += values.len() as u64;
        meter.consumed(values.iter().map(|v| v.as_ref()));
        position.1 = position.1.max(batch.last_offset() as i64 + 1);
    }
    Ok(received)
}
