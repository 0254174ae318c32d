//! Consumer requests of a native connection: subscribe, flow, ack, nack, seek, unsubscribe and
//! close, each carried to the partitions' owner shards as subscription commands.

use super::connection::{Attached, Close, Connection};
use super::outbound::ConnectionSink;
use super::requests::unknown_consumer;
use crate::authorize::Gate;
use oxbow_core::native::{validate_name, ClientFrame, ErrorCode, ServerFrame, StartPosition};
use oxbow_dispatch::subscriptions::{Command, Refusal, Target};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Consumer ids are unique in the process, so attachments from any shard never collide.
static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(1);

impl Connection {
    /// Attaches the consumer of a `Subscribe` frame on the partitions it asks for (all or
    /// none); answers the topic's partition count.
    pub(super) async fn subscribe(&self, frame: ClientFrame) -> Result<u32, Refusal> {
        let ClientFrame::Subscribe {
            consumer_id,
            topic,
            subscription,
            kind,
            mode,
            consumer_name,
            priority,
            start,
            partitions: asked,
            reattaching,
            ..
        } = frame
        else {
            unreachable!("the dispatcher hands only Subscribe frames here")
        };
        validate_name("subscription", &subscription).map_err(|e| (ErrorCode::InvalidName, e))?;
        validate_name("consumer", &consumer_name).map_err(|e| (ErrorCode::InvalidName, e))?;
        if self.consumers.borrow().contains_key(&consumer_id) {
            return Err((
                ErrorCode::BadRequest,
                format!("consumer id {consumer_id} is in use on this connection"),
            ));
        }
        let count = self.partitions_of(&topic, true).await?;
        let partitions = self.led_here(&topic, count, asked)?;
        let topic: Arc<str> = Arc::from(topic.as_str());
        let id = NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed);
        let attached = Attached {
            id,
            topic: topic.clone(),
            subscription: subscription.clone(),
            partitions: partitions.clone(),
        };
        // Attach everywhere at once, then wait: one slow partition does not serialise the rest.
        let mut answers = Vec::with_capacity(partitions.len());
        for &partition in &partitions {
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
                reattaching,
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
        Ok(count)
    }

    /// The partitions a consumer asks for (`None`: all `count`), each checked to exist and
    /// to be led by this broker: a client attaches on each leader separately.
    fn led_here(
        &self,
        topic: &str,
        count: u32,
        asked: Option<Vec<u32>>,
    ) -> Result<Vec<u32>, Refusal> {
        let partitions = asked.unwrap_or_else(|| (0..count).collect());
        if partitions.is_empty() {
            return Err((ErrorCode::BadRequest, "no partition asked for".into()));
        }
        let metadata = self.shard.metadata();
        let node = self.shard.config.node_id;
        for &partition in &partitions {
            let leader = (metadata.topic(topic))
                .and_then(|t| t.partitions.get(partition as usize))
                .map(|p| p.leader);
            match leader {
                None => {
                    return Err((
                        ErrorCode::UnknownTopic,
                        format!("topic {topic} has {count} partitions; {partition} does not exist"),
                    ))
                }
                Some(leader) if leader != node => {
                    return Err((
                        ErrorCode::NotLeader,
                        format!("broker {leader} leads {topic}-{partition}, this is broker {node}"),
                    ))
                }
                Some(_) => {}
            }
        }
        let mut unique = partitions;
        unique.sort_unstable();
        unique.dedup();
        Ok(unique)
    }

    pub(super) async fn flow(
        &self,
        consumer_id: u64,
        partition: Option<u32>,
        permits: u32,
    ) -> Result<(), Close> {
        let most = self.shard.config.subscriptions.permits_per_flow_max;
        if permits > most {
            return Err(Close::Refused(
                ErrorCode::TooLarge,
                format!(
                    "a flow frame may grant at most {most} permits (subscriptions.permits_per_flow_max)"
                ),
            ));
        }
        if let Some(why) = self.consumer_refusal(consumer_id) {
            self.revoke(consumer_id, why).await;
            return Ok(());
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
        Ok(())
    }

    pub(super) async fn seek(&self, request_id: u64, consumer_id: u64, position: StartPosition) {
        let result = match self.attached(consumer_id) {
            Some((topic, subscription, partitions)) => {
                self.reset(topic, subscription, position, &partitions).await
            }
            None => Err(unknown_consumer(consumer_id)),
        };
        self.answer(
            request_id,
            result.map(|()| ServerFrame::Done { request_id }),
        );
    }

    pub(super) async fn unsubscribe(&self, request_id: u64, consumer_id: u64) {
        let attached = self.consumers.borrow_mut().remove(&consumer_id);
        let result = match attached {
            Some(attached) => {
                self.delete_subscription(
                    attached.topic.clone(),
                    attached.subscription.clone(),
                    Some(attached.id),
                    &attached.partitions,
                )
                .await
            }
            None => Err(unknown_consumer(consumer_id)),
        };
        self.answer(
            request_id,
            result.map(|()| ServerFrame::Done { request_id }),
        );
    }

    pub(super) async fn close_consumer(&self, request_id: u64, consumer_id: u64) {
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

    /// Why the ACLs no longer let an attached consumer read, if they do not. Checked on every
    /// Flow (the consumer asking for more, as a Kafka consumer's Fetch is), so a revoked Read
    /// stops a consumer after at most the permits it already held.
    fn consumer_refusal(&self, consumer_id: u64) -> Option<String> {
        let consumers = self.consumers.borrow();
        let attached = consumers.get(&consumer_id)?;
        let gate = Gate::new(&self.shard, &self.session.borrow());
        super::authorization::consumer_refusal(&gate, &attached.topic, &attached.subscription)
    }

    /// Detaches a consumer the ACLs no longer allow and tells the client why.
    async fn revoke(&self, consumer_id: u64, reason: String) {
        let attached = self.consumers.borrow_mut().remove(&consumer_id);
        if let Some(attached) = attached {
            self.detach(&attached).await;
            self.send(ServerFrame::ConsumerClosed {
                consumer_id,
                reason,
            });
        }
    }

    fn attached(&self, consumer_id: u64) -> Option<(Arc<str>, String, Vec<u32>)> {
        self.consumers.borrow().get(&consumer_id).map(|a| {
            (
                a.topic.clone(),
                a.subscription.clone(),
                a.partitions.clone(),
            )
        })
    }

    /// The commands `command` builds for every partition of a consumer, each sent to its
    /// partition's owner.
    pub(super) async fn for_each_partition(
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
        for partition in partitions {
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
    /// Applies a consumer's commit on its partition's owner and answers `Done` once the
    /// cursor is durable; the wait runs apart, so the connection goes on meanwhile.
    pub(super) fn start_commit(
        self: &Rc<Self>,
        request_id: u64,
        consumer_id: u64,
        partition: u32,
        offsets: Vec<u64>,
        cumulative: bool,
    ) {
        let connection = self.clone();
        glommio::spawn_local(async move {
            let (reply, outcome) = flume::bounded(1);
            connection
                .to_partition(consumer_id, partition, |target, _| Command::Commit {
                    target,
                    offsets,
                    cumulative,
                    reply,
                })
                .await;
            let answer = match outcome.recv_async().await {
                Ok(committed) => committed.map(|()| ServerFrame::Done { request_id }),
                Err(_) => Err(unknown_consumer(consumer_id)),
            };
            connection.answer(request_id, answer);
        })
        .detach();
    }

    pub(super) async fn to_partition(
        &self,
        consumer_id: u64,
        partition: u32,
        command: impl FnOnce(Target, oxbow_dispatch::ConsumerId) -> Command,
    ) {
        let attachment = self
            .attachment(consumer_id)
            .filter(|(_, _, partitions, _)| partitions.contains(&partition));
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
    ) -> Option<(Arc<str>, String, Vec<u32>, oxbow_dispatch::ConsumerId)> {
        let consumers = self.consumers.borrow();
        let attached = consumers.get(&consumer_id)?;
        Some((
            attached.topic.clone(),
            attached.subscription.clone(),
            attached.partitions.clone(),
            attached.id,
        ))
    }

    pub(super) async fn detach(&self, attached: &Attached) {
        for &partition in &attached.partitions {
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
}
