//! A shard's inbox: every message from another shard (or from this one) runs as its own task on
//! the owner of what it is about.

use super::message::ShardMessage;
use super::Shard;
use crate::subscriptions::{DeadLetters, SubscriptionHost};
use std::rc::Rc;

impl Shard {
    /// Serves this shard's inbox until every sender is gone. Each message runs as its own task,
    /// so a slow append or a long-poll fetch does not hold up the others, and the inbox never
    /// waits on anything: that is what keeps a bounded mesh from deadlocking.
    pub async fn serve_inbox(self: Rc<Self>, inbox: flume::Receiver<ShardMessage>) {
        while let Ok(message) = inbox.recv_async().await {
            let shard = self.clone();
            glommio::spawn_local(async move { shard.handle(message).await }).detach();
        }
    }

    async fn handle(self: Rc<Self>, message: ShardMessage) {
        match message {
            ShardMessage::Produce {
                topic,
                partition,
                batches,
                acks,
                timeout,
                reply,
            } => {
                let appended = self.append_local(&topic, partition, batches, acks, timeout);
                let _ = reply.send(appended.await);
            }
            ShardMessage::Fetch {
                part,
                max_wait,
                stop_waiting,
                reply,
                slot,
            } => {
                let fetched = self.fetch_local(&part, max_wait, stop_waiting).await;
                let _ = reply.send((slot, fetched));
            }
            ShardMessage::ListOffset {
                topic,
                partition,
                timestamp,
                read_committed,
                reply,
            } => {
                let offset = self.list_offset_local(&topic, partition, timestamp, read_committed);
                let _ = reply.send(offset.await);
            }
            ShardMessage::CreateTopic {
                name,
                partitions,
                configs,
                internal,
                replication_factor,
                reply,
            } => {
                assert_eq!(self.id, 0, "topic creation is serialised on shard 0");
                let topic = (name, partitions, replication_factor);
                let created = self
                    .create_topic_as_coordinator(topic, configs, internal)
                    .await;
                let _ = reply.send(created);
            }
            ShardMessage::OpenPartition {
                topic,
                partition,
                config,
                reply,
            } => {
                let _ = reply.send(self.open_local(&topic, partition, config).await);
            }
            ShardMessage::DeleteTopic { name, reply } => {
                assert_eq!(self.id, 0, "topic deletion is serialised on shard 0");
                let _ = reply.send(self.delete_topic_as_coordinator(name).await);
            }
            ShardMessage::DropPartition {
                topic,
                partition,
                reply,
            } => {
                let _ = reply.send(self.drop_local(&topic, partition).await);
            }
            ShardMessage::MetadataChanged { metadata, reply } => {
                let newer = metadata.version >= self.metadata.borrow().version;
                if newer {
                    let version = metadata.version;
                    let previous = std::mem::replace(&mut *self.metadata.borrow_mut(), metadata);
                    self.apply_changed_topic_configs(&previous);
                    self.reconcile_roles();
                    (self.version_waiters.borrow_mut()).retain(|(wanted, waiter)| {
                        if *wanted <= version {
                            let _ = waiter.send(());
                            return false;
                        }
                        !waiter.is_disconnected()
                    });
                }
                let _ = reply.send(());
            }
            ShardMessage::DescribeTopics { reply } => {
                let _ = reply.send(self.topics());
            }
            ShardMessage::Subscription(command) => {
                let (topic, partition) = command.partition();
                let host = self.leading(&topic, partition);
                match host {
                    Ok(host) => {
                        let dead_letters: Rc<dyn DeadLetters> = self.clone();
                        host.subscriptions.handle(&dead_letters, *command).await;
                    }
                    Err(_) => SubscriptionHost::refuse_unknown(*command),
                }
            }
            ShardMessage::Run(work) => work(self).await,
            ShardMessage::Replica {
                topic,
                partition,
                frame,
            } => self.replica_frame(topic, partition, frame).await,
        }
    }
}
