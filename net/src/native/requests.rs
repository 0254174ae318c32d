//! What a native connection does with each request: topics, produce, subscriptions.

use super::connection::{partition_refusal, Attached, Close, Connection};
use super::outbound::ConnectionSink;
use crate::shard::Acks as ShardAcks;
use bytes::Bytes;
use oxbow_core::native::{
    validate_name, Acks, ClientFrame, ErrorCode, Mode, PartitionInfo, ServerFrame, StartPosition,
    SubscriptionType, TopicInfo,
};
use oxbow_core::{BatchError, CompressionError, RecordBatch};
use oxbow_dispatch::subscriptions::{Command, Refusal, Skipped, Target};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Consumer ids are unique in the process, so attachments from any shard never collide.
static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(1);

impl Connection {
    /// Acts on one frame; a `Refused` error closes the connection after an error frame.
    pub(super) async fn handle(
        self: Rc<Self>,
        frame: ClientFrame,
        payload: Bytes,
    ) -> Result<(), Close> {
        let limits = &self.shard.config.subscriptions;
        match frame {
            ClientFrame::Connect { .. } => {
                return Err(Close::Refused(
                    ErrorCode::BadRequest,
                    "Connect sent twice".into(),
                ))
            }
            ClientFrame::Ping => self.send(ServerFrame::Pong),
            ClientFrame::CreateTopic {
                request_id,
                name,
                partitions,
            } => {
                let result = self
                    .shard
                    .create_topic(name, partitions as i64, Vec::new())
                    .await
                    .map(|()| ServerFrame::Done { request_id })
                    .map_err(|e| {
                        let code = match e {
                            crate::shard::CreateTopicError::Exists => ErrorCode::TopicExists,
                            crate::shard::CreateTopicError::InvalidName(_) => {
                                ErrorCode::InvalidName
                            }
                            crate::shard::CreateTopicError::Storage(_) => ErrorCode::Storage,
                            _ => ErrorCode::BadRequest,
                        };
                        (code, e.to_string())
                    });
                self.answer(request_id, result);
            }
            ClientFrame::DeleteTopic { request_id, name } => {
                let result = self
                    .shard
                    .delete_topic(name)
                    .await
                    .map(|()| ServerFrame::Done { request_id })
                    .map_err(partition_refusal);
                self.answer(request_id, result);
            }
            ClientFrame::ListTopics { request_id } => {
                let topics = self
                    .shard
                    .topics()
                    .into_iter()
                    .map(|(name, partitions)| TopicInfo { name, partitions })
                    .collect();
                self.send(ServerFrame::Topics { request_id, topics });
            }
            ClientFrame::DescribeTopic { request_id, name } => {
                let result = self.describe(&name).await;
                self.answer(
                    request_id,
                    result.map(|partitions| ServerFrame::TopicDescription {
                        request_id,
                        partitions,
                    }),
                );
            }
            ClientFrame::Produce {
                request_id,
                topic,
                partition,
                acks,
            } => {
                // Bounded pipelining: past the limit the reader waits, and TCP pushes back.
                let permit = self
                    .produces
                    .acquire_static_permit(1)
                    .await
                    .expect("the semaphore is never closed");
                let connection = self.clone();
                glommio::spawn_local(async move {
                    let result = connection.produce(topic, partition, payload, acks).await;
                    drop(permit);
                    if acks != Acks::None {
                        connection.answer(
                            request_id,
                            result.map(|base_offset| ServerFrame::Produced {
                                request_id,
                                base_offset,
                            }),
                        );
                    } else if let Err((_, reason)) = result {
                        tracing::debug!(reason, "acks=none produce failed");
                    }
                })
                .detach();
            }
            ClientFrame::Subscribe {
                request_id,
                consumer_id,
                topic,
                subscription,
                kind,
                mode,
                consumer_name,
                priority,
                start,
            } => {
                let result = self
                    .subscribe(
                        consumer_id,
                        topic,
                        subscription,
                        kind,
                        mode,
                        consumer_name,
                        priority,
                        start,
                    )
                    .await
                    .map(|partitions| ServerFrame::Subscribed {
                        request_id,
                        partitions,
                    });
                self.answer(request_id, result);
            }
            ClientFrame::Flow {
                consumer_id,
                partition,
                permits,
            } => {
                if permits > limits.permits_per_flow_max {
                    return Err(Close::Refused(
                        ErrorCode::TooLarge,
                        format!(
                            "a flow frame may grant at most {} permits (subscriptions.permits_per_flow_max)",
                            limits.permits_per_flow_max
                        ),
                    ));
                }
                let flow = |target, consumer| Command::Flow {
                    target,
                    consumer,
                    permits,
                };
                match partition {
                    Some(partition) => self.to_partition(consumer_id, partition, flow).await,
                    None => self.for_each_partition(consumer_id, flow).await,
                }
            }
            ClientFrame::Ack {
                consumer_id,
                partition,
                offsets,
            } => {
                self.check_ack_count(offsets.len())?;
                self.to_partition(consumer_id, partition, |target, _| Command::Ack {
                    target,
                    offsets,
                })
                .await;
            }
            ClientFrame::AckCumulative {
                consumer_id,
                partition,
                offset,
            } => {
                self.to_partition(consumer_id, partition, |target, _| Command::AckCumulative {
                    target,
                    offset,
                })
                .await;
            }
            ClientFrame::Nack {
                consumer_id,
                partition,
                offsets,
                delay_ms,
            } => {
                self.check_ack_count(offsets.len())?;
                let delay = Duration::from_millis(delay_ms.min(limits.nack_delay_max_ms));
                self.to_partition(consumer_id, partition, |target, _| Command::Nack {
                    target,
                    offsets,
                    delay,
                })
                .await;
            }
            ClientFrame::Seek {
                request_id,
                consumer_id,
                position,
            } => {
                let result = match self.attached(consumer_id) {
                    Some((topic, subscription, _)) => {
                        self.reset(topic, subscription, position).await
                    }
                    None => Err(unknown_consumer(consumer_id)),
                };
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
            ClientFrame::Unsubscribe {
                request_id,
                consumer_id,
            } => {
                let result = match self.consumers.borrow_mut().remove(&consumer_id) {
                    Some(attached) => Ok(attached),
                    None => Err(unknown_consumer(consumer_id)),
                };
                let result = match result {
                    Ok(attached) => {
                        self.delete_subscription(
                            attached.topic.clone(),
                            attached.subscription.clone(),
                            Some(attached.id),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
            ClientFrame::CloseConsumer {
                request_id,
                consumer_id,
            } => {
                let attached = self.consumers.borrow_mut().remove(&consumer_id);
                let result = match attached {
                    Some(attached) => {
                        self.detach(&attached).await;
                        Ok(ServerFrame::Done { request_id })
                    }
                    None => Err(unknown_consumer(consumer_id)),
                };
                self.answer(request_id, result);
            }
            ClientFrame::ListSubscriptions { request_id, topic } => {
                let result = self.list_subscriptions(topic).await;
                self.answer(
                    request_id,
                    result.map(|subscriptions| ServerFrame::Subscriptions {
                        request_id,
                        subscriptions,
                    }),
                );
            }
            ClientFrame::ResetSubscription {
                request_id,
                topic,
                subscription,
                position,
            } => {
                let result = self
                    .reset(Arc::from(topic.as_str()), subscription, position)
                    .await;
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
            ClientFrame::SkipBatch {
                request_id,
                topic,
                partition,
                offset,
                subscription,
            } => {
                let result = self.skip(topic, partition, offset, subscription).await.map(
                    |(base_offset, last_offset, subscriptions)| ServerFrame::Skipped {
                        request_id,
                        base_offset,
                        last_offset,
                        subscriptions,
                    },
                );
                self.answer(request_id, result);
            }
            ClientFrame::DeleteSubscription {
                request_id,
                topic,
                subscription,
            } => {
                let result = self
                    .delete_subscription(Arc::from(topic.as_str()), subscription, None)
                    .await;
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
        }
        Ok(())
    }

    fn check_ack_count(&self, count: usize) -> Result<(), Close> {
        let max = self.shard.config.subscriptions.acks_per_frame_max;
        if count > max as usize {
            return Err(Close::Refused(
                ErrorCode::TooLarge,
                format!("at most {max} offsets per ack or nack (subscriptions.acks_per_frame_max)"),
            ));
        }
        Ok(())
    }

    pub(super) async fn produce(
        &self,
        topic: String,
        partition: u32,
        payload: Bytes,
        acks: Acks,
    ) -> Result<u64, Refusal> {
        let batches = RecordBatch::parse_many(payload)
            .map_err(|e| (ErrorCode::BadRequest, format!("bad record batch: {e}")))?;
        let limit = self.shard.config.batch_decompressed_bytes_max;
        for batch in &batches {
            let codec = batch.codec();
            batch.validate_records(limit).map_err(|e| {
                let code = match e {
                    BatchError::Decompression(CompressionError::TooLarge { .. }) => {
                        ErrorCode::TooLarge
                    }
                    _ => ErrorCode::BadRequest,
                };
                (code, format!("bad record batch: {e}"))
            })?;
            if let Ok(codec) = codec {
                crate::metrics::of(&self.shard).batch_produced(codec);
            }
        }
        if batches.is_empty() {
            return Err((
                ErrorCode::BadRequest,
                "no record batch in the payload".into(),
            ));
        }
        let partitions = self.partitions_of(&topic, true).await?;
        if partition >= partitions {
            return Err((
                ErrorCode::UnknownTopic,
                format!("topic {topic} has {partitions} partitions; {partition} does not exist"),
            ));
        }
        let topic: Arc<str> = Arc::from(topic.as_str());
        let acks = match acks {
            Acks::None => ShardAcks::None,
            Acks::Leader => ShardAcks::Leader,
            Acks::All => ShardAcks::All,
        };
        let outcome = self
            .shard
            .send_produce(topic, partition, batches, acks)
            .await
            .recv_async()
            .await;
        match outcome {
            Ok(Ok((base_offset, _))) => Ok(base_offset),
            Ok(Err(e)) => Err(partition_refusal(e)),
            Err(_) => Err((ErrorCode::Storage, "the partition's shard is gone".into())),
        }
    }

    /// The topic's partition count; a missing topic is created when `auto_create_topics`
    /// allows it and `create` is set.
    async fn partitions_of(&self, topic: &str, create: bool) -> Result<u32, Refusal> {
        if let Some(count) = self.shard.partition_count(topic) {
            return Ok(count);
        }
        if create && self.shard.config.auto_create_topics {
            let partitions = self.shard.config.default_partitions as i64;
            match self
                .shard
                .create_topic(topic.to_string(), partitions, Vec::new())
                .await
            {
                Ok(()) | Err(crate::shard::CreateTopicError::Exists) => {}
                Err(e) => return Err((ErrorCode::InvalidName, e.to_string())),
            }
            if let Some(count) = self.shard.partition_count(topic) {
                return Ok(count);
            }
        }
        Err((ErrorCode::UnknownTopic, format!("unknown topic {topic}")))
    }

    async fn describe(&self, topic: &str) -> Result<Vec<PartitionInfo>, Refusal> {
        let partitions = self.partitions_of(topic, false).await?;
        let name: Arc<str> = Arc::from(topic);
        let mut out = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let start = self.shard.list_offset(name.clone(), partition, -2).await;
            let end = self.shard.list_offset(name.clone(), partition, -1).await;
            let (start, end) = (
                start.map_err(partition_refusal)?.0,
                end.map_err(partition_refusal)?.0,
            );
            out.push(PartitionInfo {
                partition,
                log_start: start as u64,
                log_end: end as u64,
            });
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn subscribe(
        &self,
        consumer_id: u64,
        topic: String,
        subscription: String,
        kind: SubscriptionType,
        mode: Mode,
        consumer_name: String,
        priority: i32,
        start: StartPosition,
    ) -> Result<u32, Refusal> {
        validate_name("subscription", &subscription).map_err(|e| (ErrorCode::InvalidName, e))?;
        validate_name("consumer", &consumer_name).map_err(|e| (ErrorCode::InvalidName, e))?;
        if self.consumers.borrow().contains_key(&consumer_id) {
            return Err((
                ErrorCode::BadRequest,
                format!("consumer id {consumer_id} is in use on this connection"),
            ));
        }
        let partitions = self.partitions_of(&topic, true).await?;
        let topic: Arc<str> = Arc::from(topic.as_str());
        let id = NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed);
        let attached = Attached {
            id,
            topic: topic.clone(),
            subscription: subscription.clone(),
            partitions,
        };
        // Attach everywhere at once, then wait: one slow partition does not serialise the rest.
        let mut answers = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let (reply, answer) = flume::bounded(1);
            let command = Command::Attach {
                target: Target {
                    topic: topic.clone(),
                    partition,
                    subscription: subscription.clone(),
                },
                kind,
                mode,
                consumer: id,
                name: consumer_name.clone(),
                priority,
                start,
                sink: Box::new(ConnectionSink {
                    consumer_id,
                    outbound: self.outbound.clone(),
                    budget: self.budget.clone(),
                }),
                reply,
            };
            self.shard
                .send_subscription(&topic, partition, command)
                .await;
            answers.push(answer);
        }
        let mut failure = None;
        for answer in answers {
            let result = answer.recv_async().await.unwrap_or_else(|_| {
                Err((ErrorCode::Storage, "the partition's shard is gone".into()))
            });
            if let Err(refusal) = result {
                failure.get_or_insert(refusal);
            }
        }
        if let Some(refusal) = failure {
            // Undo the partitions that accepted (detaching an unknown consumer is a no-op).
            self.detach(&attached).await;
            return Err(refusal);
        }
        self.consumers.borrow_mut().insert(consumer_id, attached);
        Ok(partitions)
    }

    fn attached(&self, consumer_id: u64) -> Option<(Arc<str>, String, u32)> {
        self.consumers
            .borrow()
            .get(&consumer_id)
            .map(|a| (a.topic.clone(), a.subscription.clone(), a.partitions))
    }

    /// The commands `command` builds for every partition of a consumer, each sent to its
    /// partition's owner.
    async fn for_each_partition(
        &self,
        consumer_id: u64,
        command: impl Fn(Target, oxbow_dispatch::ConsumerId) -> Command,
    ) {
        let Some((topic, subscription, partitions, id)) = self.attachment(consumer_id) else {
            tracing::debug!(
                consumer_id,
                "frame for a consumer that is not attached: ignored"
            );
            return;
        };
        for partition in 0..partitions {
            let target = Target {
                topic: topic.clone(),
                partition,
                subscription: subscription.clone(),
            };
            self.shard
                .send_subscription(&topic, partition, command(target, id))
                .await;
        }
    }

    /// The command `command` builds, sent to one partition of a consumer.
    async fn to_partition(
        &self,
        consumer_id: u64,
        partition: u32,
        command: impl FnOnce(Target, oxbow_dispatch::ConsumerId) -> Command,
    ) {
        let attachment = self
            .attachment(consumer_id)
            .filter(|(_, _, partitions, _)| partition < *partitions);
        let Some((topic, subscription, _, id)) = attachment else {
            tracing::debug!(
                consumer_id,
                partition,
                "ack for an unknown consumer or partition"
            );
            return;
        };
        let target = Target {
            topic: topic.clone(),
            partition,
            subscription,
        };
        self.shard
            .send_subscription(&topic, partition, command(target, id))
            .await;
    }

    /// A consumer's topic, subscription, partition count and broker-wide id (no borrow kept
    /// across the awaits that follow).
    fn attachment(
        &self,
        consumer_id: u64,
    ) -> Option<(Arc<str>, String, u32, oxbow_dispatch::ConsumerId)> {
        let consumers = self.consumers.borrow();
        let attached = consumers.get(&consumer_id)?;
        Some((
            attached.topic.clone(),
            attached.subscription.clone(),
            attached.partitions,
            attached.id,
        ))
    }

    pub(super) async fn detach(&self, attached: &Attached) {
        for partition in 0..attached.partitions {
            let target = Target {
                topic: attached.topic.clone(),
                partition,
                subscription: attached.subscription.clone(),
            };
            let command = Command::Detach {
                target,
                consumer: attached.id,
            };
            self.shard
                .send_subscription(&attached.topic, partition, command)
                .await;
        }
    }

    /// Detaches every consumer of the connection (it is ending).
    pub(super) async fn detach_all(&self) {
        let attached: Vec<Attached> = self
            .consumers
            .borrow_mut()
            .drain()
            .map(|(_, a)| a)
            .collect();
        for attached in attached {
            self.detach(&attached).await;
        }
    }

    /// Sends a command with a reply to every partition and gathers the answers.
    async fn ask_partitions<T>(
        &self,
        topic: &Arc<str>,
        partitions: u32,
        command: impl Fn(u32, flume::Sender<T>) -> Command,
    ) -> Vec<Option<T>> {
        let mut answers = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let (reply, answer) = flume::bounded(1);
            self.shard
                .send_subscription(topic, partition, command(partition, reply))
                .await;
            answers.push(answer);
        }
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(answer.recv_async().await.ok());
        }
        out
    }

    async fn reset(
        &self,
        topic: Arc<str>,
        subscription: String,
        position: StartPosition,
    ) -> Result<(), Refusal> {
        let partitions = self.partitions_of(&topic, false).await?;
        let answers = self
            .ask_partitions(&topic, partitions, |partition, reply| Command::Seek {
                target: Target {
                    topic: topic.clone(),
                    partition,
                    subscription: subscription.clone(),
                },
                position,
                reply,
            })
            .await;
        first_failure(answers)
    }

    async fn delete_subscription(
        &self,
        topic: Arc<str>,
        subscription: String,
        by: Option<oxbow_dispatch::ConsumerId>,
    ) -> Result<(), Refusal> {
        let partitions = self.partitions_of(&topic, false).await?;
        let answers = self
            .ask_partitions(&topic, partitions, |partition, reply| Command::Delete {
                target: Target {
                    topic: topic.clone(),
                    partition,
                    subscription: subscription.clone(),
                },
                by,
                reply,
            })
            .await;
        // Deleted somewhere is deleted: a non-reliable subscription may be gone already where
        // its consumers left.
        let any_deleted = answers.iter().any(|a| matches!(a, Some(Ok(()))));
        if any_deleted {
            return Ok(());
        }
        first_failure(answers)
    }

    async fn skip(
        &self,
        topic: String,
        partition: u32,
        offset: u64,
        subscription: Option<String>,
    ) -> Result<Skipped, Refusal> {
        let partitions = self.partitions_of(&topic, false).await?;
        if partition >= partitions {
            return Err((
                ErrorCode::UnknownTopic,
                format!("topic {topic} has {partitions} partitions; {partition} does not exist"),
            ));
        }
        let topic: Arc<str> = Arc::from(topic.as_str());
        let (reply, answer) = flume::bounded(1);
        let command = Command::Skip {
            topic: topic.clone(),
            partition,
            offset,
            subscription,
            reply,
        };
        self.shard
            .send_subscription(&topic, partition, command)
            .await;
        answer
            .recv_async()
            .await
            .unwrap_or_else(|_| Err((ErrorCode::Storage, "the partition's shard is gone".into())))
    }

    async fn list_subscriptions(
        &self,
        topic: String,
    ) -> Result<Vec<oxbow_core::native::SubscriptionInfo>, Refusal> {
        let partitions = self.partitions_of(&topic, false).await?;
        let topic: Arc<str> = Arc::from(topic.as_str());
        let answers = self
            .ask_partitions(&topic, partitions, |partition, reply| Command::List {
                topic: topic.clone(),
                partition,
                reply,
            })
            .await;
        let mut all: Vec<_> = answers.into_iter().flatten().flatten().collect();
        all.sort_by(|a, b| (&a.name, a.partition).cmp(&(&b.name, b.partition)));
        Ok(all)
    }
}

fn unknown_consumer(consumer_id: u64) -> Refusal {
    (
        ErrorCode::UnknownConsumer,
        format!("consumer {consumer_id} is not attached on this connection"),
    )
}

fn first_failure(answers: Vec<Option<Result<(), Refusal>>>) -> Result<(), Refusal> {
    for answer in answers {
        match answer {
            Some(Ok(())) => {}
            Some(Err(refusal)) => return Err(refusal),
            None => return Err((ErrorCode::Storage, "a partition's shard is gone".into())),
        }
    }
    Ok(())
}
