//! Subscription administration of a native connection: list, reset, limit, delete, and skip
//! an undecodable batch, on the partitions of a topic this broker leads (a client asks every
//! leader).

use super::connection::Connection;
use super::requests::first_failure;
use oxbow_core::native::{ErrorCode, StartPosition};
use oxbow_dispatch::subscriptions::{Command, Refusal, Skipped, Target};
use std::sync::Arc;

impl Connection {
    /// Sends a command with a reply to each partition and gathers the answers.
    async fn ask_partitions<T>(
        &self,
        topic: &Arc<str>,
        partitions: &[u32],
        command: impl Fn(u32, flume::Sender<T>) -> Command,
    ) -> Vec<Option<T>> {
        let mut answers = Vec::with_capacity(partitions.len());
        for &partition in partitions {
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

    /// Moves a subscription's cursor on `partitions`.
    pub(super) async fn reset(
        &self,
        topic: Arc<str>,
        subscription: String,
        position: StartPosition,
        partitions: &[u32],
    ) -> Result<(), Refusal> {
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

    /// Sets a subscription's dispatch rate limit on `partitions`.
    pub(super) async fn set_dispatch_rate(
        &self,
        topic: Arc<str>,
        subscription: String,
        rate: oxbow_dispatch::DispatchRate,
        partitions: &[u32],
    ) -> Result<(), Refusal> {
        let answers = self
            .ask_partitions(&topic, partitions, |partition, reply| {
                Command::SetDispatchRate {
                    target: Target {
                        topic: topic.clone(),
                        partition,
                        subscription: subscription.clone(),
                    },
                    rate,
                    reply,
                }
            })
            .await;
        first_failure(answers)
    }

    /// Deletes a subscription on `partitions`.
    pub(super) async fn delete_subscription(
        &self,
        topic: Arc<str>,
        subscription: String,
        by: Option<oxbow_dispatch::ConsumerId>,
        partitions: &[u32],
    ) -> Result<(), Refusal> {
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
        // its consumers left. Nothing led here: nothing to do here.
        if answers.is_empty() {
            return Ok(());
        }
        let any_deleted = answers.iter().any(|a| matches!(a, Some(Ok(()))));
        if any_deleted {
            return Ok(());
        }
        first_failure(answers)
    }

    pub(super) async fn skip(
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
        if !self.partitions_led_here(&topic).await?.contains(&partition) {
            return Err((
                ErrorCode::NotLeader,
                format!("another broker leads {topic}-{partition}"),
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

    pub(super) async fn list_subscriptions(
        &self,
        topic: String,
    ) -> Result<Vec<oxbow_core::native::SubscriptionInfo>, Refusal> {
        let partitions = self.partitions_led_here(&topic).await?;
        let topic: Arc<str> = Arc::from(topic.as_str());
        let answers = self
            .ask_partitions(&topic, &partitions, |partition, reply| Command::List {
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
