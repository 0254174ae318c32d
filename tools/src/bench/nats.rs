//! The peer broker, NATS JetStream, driven by the same schedule and meter (builds with the
//! `nats` feature only; `benches/side_by_side.sh` uses it). A partition maps to a stream
//! (`<topic>-<p>`, file storage): a stream is JetStream's unit of ordering and of write
//! parallelism, as a partition is Kafka's. Producers publish with JetStream acks (acks 1 or
//! all; 0 publishes without waiting for any), keeping as many acks in flight as `--in-flight`
//! batches of `--batch-bytes` would hold; consumers read ordered pull consumers (no acks, as
//! a Kafka fetch), each its share of the streams.

use super::meter::Meter;
use super::plan::Plan;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::stream::{select_all, SelectAll, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A consumer checks whether the run is over at least this often.
const RECEIVE_WAIT: Duration = Duration::from_millis(100);
/// Messages taken at once from the consumers' streams.
const RECEIVE_BATCH: usize = 1_024;

fn stream_name(plan: &Plan, partition: u32) -> String {
    format!("{}-{partition}", plan.topic)
}

async fn connect(plan: &Plan) -> Result<async_nats::Client, String> {
    async_nats::connect(plan.broker.as_str())
        .await
        .map_err(|e| format!("connecting to NATS at {}: {e}", plan.broker))
}

pub async fn setup(plan: &Plan) -> Result<u32, String> {
    let context = jetstream::new(connect(plan).await?);
    if plan.create_topic {
        for p in 0..plan.partitions {
            let name = stream_name(plan, p);
            context
                .get_or_create_stream(stream::Config {
                    subjects: vec![name.clone()],
                    name,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("creating stream {}: {e}", stream_name(plan, p)))?;
        }
    }
    Ok(plan.partitions)
}

pub async fn cleanup(plan: &Plan) -> Result<(), String> {
    if !plan.delete_topic {
        return Ok(());
    }
    let context = jetstream::new(connect(plan).await?);
    for p in 0..plan.partitions {
        context
            .delete_stream(stream_name(plan, p))
            .await
            .map_err(|e| format!("deleting stream {}: {e}", stream_name(plan, p)))?;
    }
    Ok(())
}

pub struct Producer {
    client: async_nats::Client,
    context: jetstream::Context,
    subjects: Vec<String>,
    next: usize,
    /// Messages per "batch": the producer moves to the next stream after this many.
    per_subject_run: usize,
    in_run: usize,
    acknowledged: bool,
    message_bytes: usize,
    meter: Arc<Meter>,
    pending: Option<mpsc::Sender<(jetstream::context::PublishAckFuture, u64)>>,
    answers: tokio::task::JoinHandle<Result<(), String>>,
}

impl Producer {
    pub async fn open(plan: &Plan, index: usize, meter: Arc<Meter>) -> Result<Producer, String> {
        let client = connect(plan).await?;
        let per_batch = (plan.batch_bytes / plan.message_size).max(1);
        let window = plan.in_flight * per_batch;
        let context = jetstream::ContextBuilder::new()
            .max_ack_inflight(window)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let (pending, answers) = mpsc::channel(window);
        let answers = tokio::spawn(await_acks(answers, meter.clone(), plan.message_size));
        Ok(Producer {
            client,
            context,
            subjects: (0..plan.partitions).map(|p| stream_name(plan, p)).collect(),
            next: index % plan.partitions as usize,
            per_subject_run: per_batch,
            in_run: 0,
            acknowledged: plan.acks != "0",
            message_bytes: plan.message_size,
            meter,
            pending: Some(pending),
            answers,
        })
    }

    pub async fn push(&mut self, payload: &[u8], intended_ns: u64) -> Result<(), String> {
        let subject = self.subjects[self.next].clone();
        self.in_run += 1;
        if self.in_run >= self.per_subject_run {
            self.in_run = 0;
            self.next = (self.next + 1) % self.subjects.len();
        }
        let payload = Bytes::copy_from_slice(payload);
        if !self.acknowledged {
            self.client
                .publish(subject, payload)
                .await
                .map_err(|e| format!("publishing: {e}"))?;
            self.meter
                .sent_unacknowledged(&[intended_ns], self.message_bytes);
            return Ok(());
        }
        let ack = self
            .context
            .publish(subject, payload)
            .await
            .map_err(|e| format!("publishing: {e}"))?;
        let pending = self.pending.as_ref().expect("open until close");
        if pending.send((ack, intended_ns)).await.is_err() {
            return Err(super::task_failure(&mut self.answers).await);
        }
        Ok(())
    }

    pub async fn close(mut self) -> Result<(), String> {
        drop(self.pending.take());
        let acks = super::task_result(&mut self.answers).await;
        self.client
            .flush()
            .await
            .map_err(|e| format!("flushing: {e}"))?;
        acks
    }
}

async fn await_acks(
    mut pending: mpsc::Receiver<(jetstream::context::PublishAckFuture, u64)>,
    meter: Arc<Meter>,
    message_bytes: usize,
) -> Result<(), String> {
    while let Some((ack, intended_ns)) = pending.recv().await {
        ack.await
            .map_err(|e| format!("publish not acknowledged: {e}"))?;
        meter.published(&[intended_ns], message_bytes);
    }
    Ok(())
}

type Messages = SelectAll<consumer::pull::Ordered>;

pub struct Consumer {
    messages: Option<futures_util::stream::ReadyChunks<Messages>>,
}

impl Consumer {
    pub async fn open(plan: &Plan, index: usize, count: usize) -> Result<Consumer, String> {
        let context = jetstream::new(connect(plan).await?);
        let mut streams = Vec::new();
        for p in (0..plan.partitions).filter(|p| *p as usize % count == index) {
            let name = stream_name(plan, p);
            let stream = context
                .get_stream(&name)
                .await
                .map_err(|e| format!("stream {name}: {e}"))?;
            let ordered = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: if plan.from_earliest {
                        consumer::DeliverPolicy::All
                    } else {
                        consumer::DeliverPolicy::New
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("consumer of {name}: {e}"))?;
            streams.push(
                ordered
                    .messages()
                    .await
                    .map_err(|e| format!("messages of {name}: {e}"))?,
            );
        }
        Ok(Consumer {
            messages: (!streams.is_empty())
                .then(|| select_all(streams).ready_chunks(RECEIVE_BATCH)),
        })
    }

    pub async fn poll(&mut self, meter: &Meter) -> Result<u64, String> {
        let Some(messages) = &mut self.messages else {
            tokio::time::sleep(RECEIVE_WAIT).await;
            return Ok(0);
        };
        let batch = match tokio::time::timeout(RECEIVE_WAIT, messages.next()).await {
            Err(_) | Ok(None) => return Ok(0),
            Ok(Some(batch)) => batch,
        };
        let mut payloads = Vec::with_capacity(batch.len());
        for message in batch {
            payloads.push(
                message
                    .map_err(|e| format!("receiving: {e}"))?
                    .message
                    .payload,
            );
        }
        meter.consumed(payloads.iter().map(|p| p.as_ref()));
        Ok(payloads.len() as u64)
    }
}
