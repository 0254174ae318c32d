//! The bench over Oxbow's native protocol, with the Rust client (`oxbow-client`): each producer
//! is a client `Producer` (its linger, batch size and in-flight bound), each consumer a member
//! of one subscription of the chosen type and mode, in the chosen tier (`--tier`).

use super::meter::Meter;
use super::plan::Plan;
use oxbow_client::config::{parse_acks, parse_kind, parse_mode};
use oxbow_client::{
    Acker, Acks, Client, ClientError, Mode, PendingSend, Receive, StartPosition, Tier,
    TieredConsumer,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Sends whose answers are awaited, oldest first.
const PENDING_SENDS_MAX: usize = 1 << 16;
/// A consumer's local queue (flow permits it grants the broker).
const RECEIVER_QUEUE: u32 = 4_096;
/// A consumer checks whether the run is over at least this often.
const RECEIVE_WAIT: Duration = Duration::from_millis(100);

fn describe(e: ClientError) -> String {
    e.to_string()
}

pub async fn connect(plan: &Plan) -> Result<Client, String> {
    Client::builder()
        .broker(&plan.broker)
        .client_name("oxbow-bench")
        .connect()
        .await
        .map_err(|e| format!("connecting to the native listener at {}: {e}", plan.broker))
}

/// Creates the topic if asked and returns its partition count.
pub async fn setup(plan: &Plan) -> Result<u32, String> {
    let client = connect(plan).await?;
    if plan.create_topic {
        match client.create_topic(&plan.topic, plan.partitions).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(oxbow_client::ErrorCode::TopicExists) => {}
            Err(e) => return Err(format!("creating topic {}: {e}", plan.topic)),
        }
    }
    let partitions = client
        .describe_topic(&plan.topic)
        .await
        .map_err(|e| format!("topic {}: {e}", plan.topic))?;
    Ok(partitions.len() as u32)
}

/// Deletes the topic (and with it the subscription), or only the subscription.
pub async fn cleanup(plan: &Plan, subscription: &str) -> Result<(), String> {
    let client = connect(plan).await?;
    if plan.delete_topic {
        client.delete_topic(&plan.topic).await.map_err(describe)
    } else if plan.consumers > 0 {
        client
            .delete_subscription(&plan.topic, subscription)
            .await
            .map_err(describe)
    } else {
        Ok(())
    }
}

pub struct Producer {
    producer: oxbow_client::Producer,
    pending: Option<mpsc::Sender<(PendingSend, u64)>>,
    answers: tokio::task::JoinHandle<Result<(), String>>,
}

impl Producer {
    pub async fn open(plan: &Plan, meter: Arc<Meter>) -> Result<Producer, String> {
        let client = connect(plan).await?;
        let acks = parse_acks(&plan.acks).map_err(describe)?;
        let mut producer = client.producer(&plan.topic);
        if let Some(on) = plan.idempotence {
            producer = producer.idempotence(on);
        }
        let producer = producer
            .acks(acks)
            .linger(plan.linger)
            .batch_bytes_max(plan.batch_bytes)
            .in_flight_batches_max(plan.in_flight)
            .compression(plan.codec, plan.compression_level)
            .map_err(describe)?
            .build()
            .await
            .map_err(|e| format!("producer on {}: {e}", plan.topic))?;
        let (pending, answers) = mpsc::channel(PENDING_SENDS_MAX);
        let answers = tokio::spawn(await_answers(
            answers,
            meter,
            plan.message_size,
            acks == Acks::None,
        ));
        Ok(Producer {
            producer,
            pending: Some(pending),
            answers,
        })
    }

    pub async fn push(&mut self, payload: &[u8], intended_ns: u64) -> Result<(), String> {
        let sent = self.producer.send(None, payload).await.map_err(describe)?;
        let pending = self.pending.as_ref().expect("open until close");
        if pending.send((sent, intended_ns)).await.is_err() {
            return Err(super::task_failure(&mut self.answers).await);
        }
        Ok(())
    }

    /// Sends what is batched and waits for every answer.
    pub async fn close(mut self) -> Result<(), String> {
        self.producer.flush().await.map_err(describe)?;
        drop(self.pending.take());
        super::task_result(&mut self.answers).await
    }
}

async fn await_answers(
    mut pending: mpsc::Receiver<(PendingSend, u64)>,
    meter: Arc<Meter>,
    message_bytes: usize,
    unacknowledged: bool,
) -> Result<(), String> {
    while let Some((sent, intended_ns)) = pending.recv().await {
        sent.await.map_err(|e| format!("produce refused: {e}"))?;
        if unacknowledged {
            meter.sent_unacknowledged(&[intended_ns], message_bytes);
        } else {
            meter.published(&[intended_ns], message_bytes);
        }
    }
    Ok(())
}

pub struct Consumer {
    consumer: TieredConsumer,
    acker: Acker,
    reliable: bool,
}

impl Consumer {
    pub async fn open(plan: &Plan, subscription: &str, index: usize) -> Result<Consumer, String> {
        let client = connect(plan).await?;
        let mode = parse_mode(&plan.mode).map_err(describe)?;
        let consumer = client
            .consumer(&plan.topic, subscription)
            .kind(parse_kind(&plan.subscription_type).map_err(describe)?)
            .mode(mode)
            .name(format!("bench-{index}"))
            .start(if plan.from_earliest {
                StartPosition::Earliest
            } else {
                StartPosition::Latest
            })
            .receiver_queue(RECEIVER_QUEUE)
            .build_tier(plan.tier.parse::<Tier>().map_err(describe)?)
            .await
            .map_err(|e| format!("subscribing to {}: {e}", plan.topic))?;
        Ok(Consumer {
            acker: consumer.acker(),
            consumer,
            reliable: mode == Mode::Reliable,
        })
    }

    /// Waits a little for messages; records and acknowledges what came.
    pub async fn poll(&mut self, meter: &Meter) -> Result<u64, String> {
        let received = self.consumer.next_batch_within(RECEIVE_WAIT).await;
        let Some(batch) = received.map_err(describe)? else {
            return Ok(0);
        };
        meter.consumed(batch.iter().map(|m| m.value.as_ref()));
        if self.reliable {
            self.acker.ack_all(&batch).map_err(describe)?;
        }
        Ok(batch.len() as u64)
    }

    pub async fn close(self) -> Result<(), String> {
        self.consumer.close().await.map_err(describe)
    }
}
