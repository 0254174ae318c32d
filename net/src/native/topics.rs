//! Topic requests of a native connection: create, delete, list and describe topics, and
//! produce.

use super::connection::{partition_refusal, Connection};
use crate::shard::Acks as ShardAcks;
use bytes::Bytes;
use oxbow_core::native::{
    Acks, BrokerInfo, ErrorCode, PartitionInfo, ServerFrame, TopicInfo, TopicLeaders,
};
use oxbow_core::{BatchError, CompressionError, RecordBatch};
use oxbow_dispatch::subscriptions::Refusal;
use std::rc::Rc;
use std::sync::Arc;

impl Connection {
    /// Creates a topic with `replication_factor` replicas per partition (0: the broker's
    /// default).
    pub(super) async fn create_topic(
        &self,
        request_id: u64,
        name: String,
        partitions: u32,
        replication_factor: u16,
    ) {
        let replicas = match replication_factor {
            0 => self.shard.config.default_replication_factor,
            n => n,
        };
        let result = self
            .shard
            .create_replicated_topic(name, partitions as i64, replicas as usize, Vec::new())
            .await
            .map(|()| ServerFrame::Done { request_id })
            .map_err(|e| {
                use crate::shard::CreateTopicError as Why;
                let code = match e {
                    Why::Exists => ErrorCode::TopicExists,
                    Why::InvalidName(_) => ErrorCode::InvalidName,
                    Why::Storage(_) => ErrorCode::Storage,
                    Why::InvalidReplication(_) => ErrorCode::InvalidReplicationFactor,
                    Why::TimedOut(_) => ErrorCode::TimedOut,
                    Why::InvalidPartitions(..) | Why::InvalidConfig(_) => ErrorCode::BadRequest,
                };
                (code, e.to_string())
            });
        self.answer(request_id, result);
    }

    /// Grows a topic to `partitions` partitions, on shard 0 as every metadata change.
    pub(super) async fn create_partitions(&self, request_id: u64, name: String, partitions: u32) {
        self.answer_from_shard_zero(request_id, move |shard| async move {
            use crate::shard::CreatePartitionsError as Why;
            let grown = shard
                .create_partitions(&name, partitions, None, false)
                .await;
            grown.map_err(|e| {
                let code = match &e {
                    Why::UnknownTopic(_) => ErrorCode::UnknownTopic,
                    Why::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
                    Why::InvalidReplication(_) => ErrorCode::InvalidReplicationFactor,
                    Why::InvalidAssignment(_) | Why::Internal(_) => ErrorCode::BadRequest,
                    Why::TimedOut(_) => ErrorCode::TimedOut,
                    Why::Storage(_) => ErrorCode::Storage,
                };
                (code, e.to_string())
            })
        })
        .await;
    }

    /// Changes a topic's config overrides (`None`: the override goes), on shard 0.
    pub(super) async fn alter_topic_configs(
        &self,
        request_id: u64,
        name: String,
        changes: Vec<(String, Option<String>)>,
    ) {
        self.answer_from_shard_zero(request_id, move |shard| async move {
            use crate::shard::AlterConfigsError as Why;
            let altered = shard
                .change_topic_configs(&name, changes, false, false)
                .await;
            altered.map_err(|e| {
                let code = match &e {
                    Why::UnknownTopic(_) => ErrorCode::UnknownTopic,
                    Why::InvalidConfig(_) => ErrorCode::InvalidConfig,
                    Why::TimedOut(_) => ErrorCode::TimedOut,
                };
                (code, e.to_string())
            })
        })
        .await;
    }

    /// Runs `work` on shard 0, where metadata changes are made, and answers `Done` or its
    /// refusal.
    async fn answer_from_shard_zero<F, Fut>(&self, request_id: u64, work: F)
    where
        F: FnOnce(Rc<crate::shard::Shard>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), Refusal>> + 'static,
    {
        let result = (self.shard.run_on(0, work).await)
            .unwrap_or_else(|| Err((ErrorCode::Storage, "shard 0 is gone".into())))
            .map(|()| ServerFrame::Done { request_id });
        self.answer(request_id, result);
    }

    pub(super) async fn delete_topic(&self, request_id: u64, name: String) {
        let result = self
            .shard
            .delete_topic(name)
            .await
            .map(|()| ServerFrame::Done { request_id })
            .map_err(partition_refusal);
        self.answer(request_id, result);
    }

    /// Lists the topics the principal may describe (all of them without an authorizer).
    pub(super) fn list_topics(&self, request_id: u64) {
        let gate = crate::authorize::Gate::new(&self.shard, &self.session.borrow());
        let topics = (self.shard.topics().into_iter())
            .filter(|(name, _)| gate.sees_topic(name))
            .map(|(name, partitions)| TopicInfo { name, partitions })
            .collect();
        self.send(ServerFrame::Topics { request_id, topics });
    }

    /// Starts a produce and answers it when it completes, so the next frame is read at once;
    /// at most `native_produce_in_flight_max` are in flight (then the reader waits, and TCP
    /// pushes back).
    pub(super) async fn start_produce(
        self: &Rc<Self>,
        request_id: u64,
        topic: String,
        partition: u32,
        acks: Acks,
        payload: Bytes,
    ) {
        let permit = self
            .produces
            .clone()
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
            if batch.is_transactional() {
                // No native transaction coordinator: nothing would ever end its transaction.
                let why = "transactional batches need a Kafka transactional producer";
                return Err((ErrorCode::BadRequest, why.to_string()));
            }
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
        if self.shard.topic_compacts(&topic) {
            for batch in &batches {
                let keyless = (batch.keyless_records(limit))
                    .map_err(|e| (ErrorCode::BadRequest, format!("bad record batch: {e}")))?;
                if let Some(index) = keyless.first() {
                    return Err((
                        ErrorCode::BadRequest,
                        format!("compacted topic {topic} refuses records without a key (record {index} of a batch has none)"),
                    ));
                }
            }
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
    pub(super) async fn partitions_of(&self, topic: &str, create: bool) -> Result<u32, Refusal> {
        if let Some(count) = self.shard.partition_count(topic) {
            return Ok(count);
        }
        let may_create = || {
            let gate = crate::authorize::Gate::new(&self.shard, &self.session.borrow());
            gate.may_create_topic(topic)
        };
        if create && self.shard.config.auto_create_topics && may_create() {
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

    /// The partitions of a topic (it must exist) this broker leads.
    pub(super) async fn partitions_led_here(&self, topic: &str) -> Result<Vec<u32>, Refusal> {
        self.partitions_of(topic, false).await?;
        let metadata = self.shard.metadata();
        let node = self.shard.config.node_id;
        let partitions = metadata.topic(topic).map_or(&[][..], |t| &t.partitions[..]);
        Ok((0..partitions.len() as u32)
            .filter(|&p| partitions[p as usize].leader == node)
            .collect())
    }

    /// The unfenced brokers, each at its address on the listener of this connection's name
    /// (else its first native listener's), and the leaders of the `topics` that exist.
    pub(super) fn metadata_answer(&self, request_id: u64, topics: &[String]) -> ServerFrame {
        let metadata = self.shard.metadata();
        let listener = &self.listener.name;
        let brokers = (metadata.unfenced_brokers())
            .map(|b| BrokerInfo {
                id: b.id,
                native_addr: (b.native_listeners.get(listener))
                    .unwrap_or(&b.native_addr)
                    .clone(),
            })
            .collect();
        let topics = topics
            .iter()
            .filter_map(|name| {
                let topic = metadata.topic(name)?;
                Some(TopicLeaders {
                    name: name.clone(),
                    leaders: topic.partitions.iter().map(|p| p.leader).collect(),
                })
            })
            .collect();
        ServerFrame::Metadata {
            request_id,
            brokers,
            topics,
        }
    }

    /// Offsets of the partitions this broker leads.
    pub(super) async fn describe(&self, topic: &str) -> Result<Vec<PartitionInfo>, Refusal> {
        let partitions = self.partitions_led_here(topic).await?;
        let name: Arc<str> = Arc::from(topic);
        let mut out = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let start = (self.shard)
                .list_offset(name.clone(), partition, -2, false)
                .await;
            let end = (self.shard)
                .list_offset(name.clone(), partition, -1, false)
                .await;
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
}
