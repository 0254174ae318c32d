//! One native frame in, its work started: the dispatcher of a connection's requests. Topic
//! requests and produce are in `topics.rs`, consumers in `consumers.rs`, subscription
//! administration in `subscription_admin.rs`.

use super::connection::{Close, Connection};
use crate::authorize::Gate;
use bytes::Bytes;
use oxbow_core::native::{ClientFrame, ErrorCode, ServerFrame};
use oxbow_dispatch::subscriptions::{Command, Refusal};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A frame's name for messages: frames are never printed whole, as some carry secrets.
fn frame_kind(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Connect { .. } => "Connect",
        ClientFrame::Authenticate { .. } => "Authenticate",
        _ => "a frame out of place",
    }
}

impl Connection {
    /// Acts on one frame; a `Refused` error closes the connection after an error frame.
    pub(super) async fn handle(
        self: Rc<Self>,
        frame: ClientFrame,
        payload: Bytes,
    ) -> Result<(), Close> {
        let gate = Gate::new(&self.shard, &self.session.borrow());
        if let Some((request_id, why)) = super::authorization::refusal(&gate, &frame) {
            self.answer(request_id, Err((ErrorCode::NotAuthorized, why)));
            return Ok(());
        }
        match frame {
            ClientFrame::Connect { .. } => {
                return Err(Close::Refused(
                    ErrorCode::BadRequest,
                    "Connect sent twice".into(),
                ))
            }
            ClientFrame::Ping => self.send(ServerFrame::Pong),
            ClientFrame::Produce {
                request_id,
                topic,
                partition,
                acks,
            } => {
                self.start_produce(request_id, topic, partition, acks, payload)
                    .await
            }
            ClientFrame::InitProducer { request_id } => {
                let answer = crate::kafka::groups::new_producer_id(&self.shard).await;
                self.answer(
                    request_id,
                    answer
                        .map(|(producer_id, epoch)| ServerFrame::ProducerId {
                            request_id,
                            producer_id,
                            epoch,
                        })
                        .map_err(|why| (ErrorCode::Storage, why)),
                );
            }
            ClientFrame::Commit {
                request_id,
                consumer_id,
                partition,
                offsets,
                cumulative,
            } => {
                self.check_ack_count(offsets.len())?;
                self.start_commit(request_id, consumer_id, partition, offsets, cumulative);
            }
            topic @ (ClientFrame::CreateTopic { .. }
            | ClientFrame::CreatePartitions { .. }
            | ClientFrame::AlterTopicConfigs { .. }
            | ClientFrame::DeleteTopic { .. }
            | ClientFrame::ListTopics { .. }
            | ClientFrame::Metadata { .. }
            | ClientFrame::DescribeTopic { .. }) => self.handle_topic_frame(topic).await,
            admin @ (ClientFrame::ListSubscriptions { .. }
            | ClientFrame::ResetSubscription { .. }
            | ClientFrame::SetDispatchRate { .. }
            | ClientFrame::SkipBatch { .. }
            | ClientFrame::DeleteSubscription { .. }) => self.handle_admin_frame(admin).await,
            consumer => self.handle_consumer_frame(consumer).await?,
        }
        Ok(())
    }

    async fn handle_topic_frame(&self, frame: ClientFrame) {
        match frame {
            ClientFrame::CreateTopic {
                request_id,
                name,
                partitions,
                replication_factor,
            } => {
                self.create_topic(request_id, name, partitions, replication_factor)
                    .await
            }
            ClientFrame::CreatePartitions {
                request_id,
                name,
                partitions,
            } => self.create_partitions(request_id, name, partitions).await,
            ClientFrame::AlterTopicConfigs {
                request_id,
                name,
                set,
                delete,
            } => {
                let set = set.into_iter().map(|(k, v)| (k, Some(v)));
                let changes = set.chain(delete.into_iter().map(|k| (k, None))).collect();
                self.alter_topic_configs(request_id, name, changes).await
            }
            ClientFrame::DeleteTopic { request_id, name } => {
                self.delete_topic(request_id, name).await
            }
            ClientFrame::ListTopics { request_id } => self.list_topics(request_id),
            ClientFrame::Metadata { request_id, topics } => {
                let frame = self.metadata_answer(request_id, &topics);
                self.send(frame);
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
            _ => unreachable!("handle routes only topic frames here"),
        }
    }

    async fn handle_admin_frame(&self, frame: ClientFrame) {
        match frame {
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
                let result = match self.partitions_led_here(&topic).await {
                    Ok(partitions) => {
                        let topic = Arc::from(topic.as_str());
                        self.reset(topic, subscription, position, &partitions).await
                    }
                    Err(refusal) => Err(refusal),
                };
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
            ClientFrame::SetDispatchRate {
                request_id,
                topic,
                subscription,
                messages_per_second,
                bytes_per_second,
            } => {
                let rate = oxbow_dispatch::DispatchRate {
                    messages_per_second,
                    bytes_per_second,
                };
                let result = match self.partitions_led_here(&topic).await {
                    Ok(partitions) => {
                        let topic = Arc::from(topic.as_str());
                        (self.set_dispatch_rate(topic, subscription, rate, &partitions)).await
                    }
                    Err(refusal) => Err(refusal),
                };
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
                let result = match self.partitions_led_here(&topic).await {
                    Ok(partitions) => {
                        let topic = Arc::from(topic.as_str());
                        self.delete_subscription(topic, subscription, None, &partitions)
                            .await
                    }
                    Err(refusal) => Err(refusal),
                };
                self.answer(
                    request_id,
                    result.map(|()| ServerFrame::Done { request_id }),
                );
            }
            _ => unreachable!("handle routes only subscription administration here"),
        }
    }

    async fn handle_consumer_frame(&self, frame: ClientFrame) -> Result<(), Close> {
        match frame {
            subscribe @ ClientFrame::Subscribe { request_id, .. } => {
                let result = self.subscribe(subscribe).await;
                let answer = result.map(|partitions| ServerFrame::Subscribed {
                    request_id,
                    partitions,
                });
                self.answer(request_id, answer);
            }
            ClientFrame::Flow {
                consumer_id,
                partition,
                permits,
            } => self.flow(consumer_id, partition, permits).await?,
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
                let most = self.shard.config.subscriptions.nack_delay_max_ms;
                let delay = Duration::from_millis(delay_ms.min(most));
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
            } => self.seek(request_id, consumer_id, position).await,
            ClientFrame::Unsubscribe {
                request_id,
                consumer_id,
            } => self.unsubscribe(request_id, consumer_id).await,
            ClientFrame::CloseConsumer {
                request_id,
                consumer_id,
            } => self.close_consumer(request_id, consumer_id).await,
            ClientFrame::Authenticate { .. } => {
                // Its token is a secret: named, never printed.
                return Err(Close::Refused(
                    ErrorCode::BadRequest,
                    "Authenticate on a listener without SASL, or after authenticating".into(),
                ));
            }
            other => {
                return Err(Close::Refused(
                    ErrorCode::BadRequest,
                    format!("unexpected frame {}", frame_kind(&other)),
                ))
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
}

pub(super) fn unknown_consumer(consumer_id: u64) -> Refusal {
    (
        ErrorCode::UnknownConsumer,
        format!("consumer {consumer_id} is not attached on this connection"),
    )
}

/// The first refusal among the partitions' answers (a missing answer is a gone shard).
pub(super) fn first_failure(answers: Vec<Option<Result<(), Refusal>>>) -> Result<(), Refusal> {
    for answer in answers {
        match answer {
            Some(Ok(())) => {}
            Some(Err(refusal)) => return Err(refusal),
            None => return Err((ErrorCode::Storage, "a partition's shard is gone".into())),
        }
    }
    Ok(())
}
