//! One function per Kafka API: decode the body, do the work through the shard, build the body.

use super::groups::GroupHome;
use super::produce::start_produce;
use super::versions::ADVERTISED;
use super::wire::{code, text};
use super::KafkaEndpoint;
use crate::authorize::Gate;
use crate::session::Session;
use crate::shard::{CreateTopicError, FetchPart, PartitionError, Shard};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, ListOffsetsRequest, ListOffsetsResponse, ProducerId, RequestHeader,
    RequestKind, ResponseKind, TopicName,
};
use oxbow_cluster::Operation;
use oxbow_core::RecordBatch;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn topic_name(s: &str) -> TopicName {
    TopicName(text(s))
}

pub(super) fn partition_error_code(e: &PartitionError) -> i16 {
    match e {
        PartitionError::UnknownTopicOrPartition => code::UNKNOWN_TOPIC_OR_PARTITION,
        PartitionError::NotLeader { .. } => code::NOT_LEADER_OR_FOLLOWER,
        PartitionError::NotEnoughReplicas => code::NOT_ENOUGH_REPLICAS,
        PartitionError::OffsetOutOfRange => code::OFFSET_OUT_OF_RANGE,
        PartitionError::BatchTooLarge => code::MESSAGE_TOO_LARGE,
        PartitionError::OutOfOrderSequence => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        PartitionError::ProducerFenced => code::INVALID_PRODUCER_EPOCH,
        PartitionError::InternalTopic => code::INVALID_TOPIC,
        PartitionError::TimedOut => code::REQUEST_TIMED_OUT,
        PartitionError::TopicAuthorizationFailed => code::TOPIC_AUTHORIZATION_FAILED,
        _ => code::KAFKA_STORAGE_ERROR,
    }
}

/// Partition `index` of a topic with `count` partitions (`None`: no such topic), if it
/// exists.
pub(super) fn known_partition(count: Option<u32>, index: i32) -> Option<u32> {
    u32::try_from(index)
        .ok()
        .filter(|&p| count.is_some_and(|n| p < n))
}

/// What a request is answered with.
pub enum Reply {
    /// A response the codec encodes whole.
    Encoded(ResponseKind),
    /// A Fetch response, and the batches of each of its partitions in order: they are written
    /// from where they are stored, not copied into the response.
    Fetch(FetchResponse, Vec<Vec<RecordBatch>>),
}

/// Answers a decoded request; `None` means send nothing (Produce with acks=0).
pub async fn handle(
    shard: &Shard,
    endpoint: &KafkaEndpoint,
    session: &Session,
    version: i16,
    header: &RequestHeader,
    request: RequestKind,
) -> Result<Option<Reply>, String> {
    let gate = Gate::new(shard, session);
    if let RequestKind::Fetch(request) = request {
        let (response, records) = fetch(shard, &gate, request).await;
        return Ok(Some(Reply::Fetch(response, records)));
    }
    let (request, denied) = match super::admin_authorization::admit(&gate, request, version) {
        Ok(admitted) => admitted,
        Err(refusal) => return Ok(Some(Reply::Encoded(*refusal))),
    };
    let mut encoded =
        handle_encoded(shard, endpoint, session, &gate, version, header, request).await?;
    if let Some(response) = encoded.as_mut() {
        super::admin_authorization::answer_denied(response, denied);
        super::admin_authorization::listed_groups(&gate, response);
    }
    Ok(encoded.map(Reply::Encoded))
}

async fn handle_encoded(
    shard: &Shard,
    endpoint: &KafkaEndpoint,
    session: &Session,
    gate: &Gate<'_>,
    version: i16,
    header: &RequestHeader,
    request: RequestKind,
) -> Result<Option<ResponseKind>, String> {
    Ok(match request {
        RequestKind::ApiVersions(_) => Some(ResponseKind::ApiVersions(api_versions(code::NONE))),
        RequestKind::Metadata(request) => Some(ResponseKind::Metadata(
            super::metadata::metadata(shard, gate, endpoint, request, version).await,
        )),
        RequestKind::Produce(request) => start_produce(shard, gate, request, version)
            .await
            .finish()
            .await
            .map(ResponseKind::Produce),
        RequestKind::ListOffsets(request) => Some(ResponseKind::ListOffsets(
            list_offsets(shard, gate, request).await,
        )),
        RequestKind::CreateTopics(request) => Some(ResponseKind::CreateTopics(
            create_topics(shard, gate, request).await,
        )),
        RequestKind::AlterConfigs(request) => Some(ResponseKind::AlterConfigs(
            super::configs::alter(shard, request).await,
        )),
        RequestKind::IncrementalAlterConfigs(request) => {
            Some(ResponseKind::IncrementalAlterConfigs(
                super::configs::alter_incrementally(shard, request).await,
            ))
        }
        RequestKind::CreatePartitions(request) => Some(ResponseKind::CreatePartitions(
            super::partitions::create(shard, request).await,
        )),
        RequestKind::DeleteTopics(request) => Some(ResponseKind::DeleteTopics(
            delete_topics(shard, gate, request).await,
        )),
        RequestKind::DescribeConfigs(request) => Some(ResponseKind::DescribeConfigs(
            super::describe_configs::describe_configs(shard, request),
        )),
        RequestKind::DescribeQuorum(request) => Some(ResponseKind::DescribeQuorum(
            super::cluster_admin::describe_quorum(shard, request).await,
        )),
        RequestKind::UnregisterBroker(request) => Some(ResponseKind::UnregisterBroker(
            super::cluster_admin::unregister_broker(shard, request).await,
        )),
        RequestKind::ElectLeaders(request) => Some(ResponseKind::ElectLeaders(
            super::elections::elect_leaders(shard, request).await,
        )),
        RequestKind::DescribeProducers(request) => Some(ResponseKind::DescribeProducers(
            super::producers::describe_producers(shard, request).await,
        )),
        RequestKind::DeleteRecords(request) => Some(ResponseKind::DeleteRecords(
            super::delete_records::delete_records(shard, request).await,
        )),
        RequestKind::AlterUserScramCredentials(request) => Some(
            ResponseKind::AlterUserScramCredentials(super::users::alter(shard, request).await),
        ),
        RequestKind::DescribeUserScramCredentials(request) => Some(
            ResponseKind::DescribeUserScramCredentials(super::users::describe(shard, request)),
        ),
        RequestKind::DescribeCluster(_) => Some(ResponseKind::DescribeCluster(
            super::metadata::describe_cluster(shard, endpoint),
        )),
        RequestKind::AlterPartitionReassignments(request) => {
            Some(ResponseKind::AlterPartitionReassignments(
                super::reassignments::alter(shard, request).await,
            ))
        }
        RequestKind::ListPartitionReassignments(request) => Some(
            ResponseKind::ListPartitionReassignments(super::reassignments::list(shard, request)),
        ),
        RequestKind::FindCoordinator(request) => Some(ResponseKind::FindCoordinator(
            find_coordinator(shard, gate, endpoint, request).await,
        )),
        RequestKind::CreateAcls(request) => Some(ResponseKind::CreateAcls(
            super::acls::create(shard, gate, request).await,
        )),
        RequestKind::DescribeAcls(request) => Some(ResponseKind::DescribeAcls(
            super::acls::describe(shard, gate, request),
        )),
        RequestKind::DeleteAcls(request) => Some(ResponseKind::DeleteAcls(
            super::acls::delete(shard, gate, request).await,
        )),
        RequestKind::ListTransactions(request) => Some(ResponseKind::ListTransactions(
            super::transactions::list(shard, gate, request).await,
        )),
        RequestKind::DescribeTransactions(request) => Some(ResponseKind::DescribeTransactions(
            super::transactions::describe(shard, gate, request).await,
        )),
        txn @ (RequestKind::AddPartitionsToTxn(_)
        | RequestKind::AddOffsetsToTxn(_)
        | RequestKind::EndTxn(_)) => {
            Some(super::transactions::serve(shard, gate, txn, version).await?)
        }
        RequestKind::InitProducerId(r) if r.transactional_id.is_some() => {
            let request = RequestKind::InitProducerId(r);
            Some(super::transactions::serve(shard, gate, request, version).await?)
        }
        group @ (RequestKind::JoinGroup(_)
        | RequestKind::SyncGroup(_)
        | RequestKind::Heartbeat(_)
        | RequestKind::LeaveGroup(_)
        | RequestKind::OffsetCommit(_)
        | RequestKind::OffsetFetch(_)
        | RequestKind::ListGroups(_)
        | RequestKind::DescribeGroups(_)
        | RequestKind::DeleteGroups(_)
        | RequestKind::OffsetDelete(_)
        | RequestKind::TxnOffsetCommit(_)
        | RequestKind::ConsumerGroupHeartbeat(_)
        | RequestKind::ConsumerGroupDescribe(_)
        | RequestKind::InitProducerId(_)) => {
            let client = super::groups::Client {
                id: header
                    .client_id
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                host: session.client_host(),
                session: shard.config.authorizer.enabled.then(|| session.clone()),
            };
            Some(super::groups::serve(shard, gate, group, version, client).await?)
        }
        _ => return Err("this API is not served".to_string()),
    })
}

/// The node that coordinates a group (key type 0) or a transactional id (key type 1).
async fn find_coordinator(
    shard: &Shard,
    gate: &Gate<'_>,
    endpoint: &KafkaEndpoint,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    if request.key_type == 0 && !gate.group(&request.key, Operation::Describe) {
        response.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return response;
    }
    if request.key_type == 1 && !gate.transactional_id(&request.key, Operation::Describe) {
        response.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return response;
    }
    let mut answer = |node: i32, at: &KafkaEndpoint| {
        response.node_id = BrokerId(node);
        response.host = text(&at.host);
        response.port = at.port;
    };
    let home = match request.key_type {
        0 => super::groups::coordinator_of(shard, &request.key).await,
        1 => match super::transactions::coordinator_of(shard, &request.key).await {
            Ok(_) => Ok(GroupHome::Here { shard: 0 }),
            Err(super::transactions::Home::Elsewhere(leader)) => Ok(GroupHome::Elsewhere {
                leader: Some(leader),
            }),
            Err(super::transactions::Home::Unavailable) => {
                Ok(GroupHome::Elsewhere { leader: None })
            }
        },
        _ => {
            response.error_code = code::INVALID_REQUEST;
            return response;
        }
    };
    let found = match home {
        Ok(GroupHome::Here { .. }) => Some((shard.config.node_id, endpoint.clone())),
        Ok(GroupHome::Elsewhere {
            leader: Some(leader),
        }) => (shard.metadata().brokers)
            .get(&leader)
            .and_then(|broker| super::metadata::kafka_endpoint(broker, &endpoint.listener))
            .map(|at| (leader, at)),
        Ok(GroupHome::Elsewhere { leader: None }) => None,
        Err(e) => {
            tracing::error!(error = %e, "finding a group coordinator");
            None
        }
    };
    match found {
        Some((node, at)) => answer(node, &at),
        None => response.error_code = code::COORDINATOR_NOT_AVAILABLE,
    }
    response
}

/// The ApiVersions body listing [`ADVERTISED`].
pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = ADVERTISED
        .iter()
        .map(|(api, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = *api as i16;
            version.min_version = *min;
            version.max_version = *max;
            version
        })
        .collect();
    response
}

/// One partition a fetch asks for, as the request names it.
struct Wanted {
    partition: i32,
}

async fn fetch(
    shard: &Shard,
    gate: &Gate<'_>,
    request: FetchRequest,
) -> (FetchResponse, Vec<Vec<RecordBatch>>) {
    let mut wanted = Vec::new();
    let mut parts = Vec::new();
    let mut order: Vec<(String, usize)> = Vec::new();
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let arc: Arc<str> = Arc::from(name.as_str());
        let readable = gate.topic(&name, Operation::Read);
        order.push((name, topic.partitions.len()));
        for partition in &topic.partitions {
            wanted.push(Wanted {
                partition: partition.partition,
            });
            parts.push(match (partition.partition, partition.fetch_offset) {
                _ if !readable => Err(PartitionError::TopicAuthorizationFailed),
                (p, _) if p < 0 => Err(PartitionError::UnknownTopicOrPartition),
                (_, o) if o < 0 => Err(PartitionError::OffsetOutOfRange),
                (p, o) => Ok(FetchPart {
                    topic: arc.clone(),
                    partition: p as u32,
                    offset: o as u64,
                    max_bytes: partition.partition_max_bytes.max(0) as usize,
                    read_committed: request.isolation_level == 1,
                }),
            });
        }
    }
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let min_bytes = request.min_bytes.max(1) as usize;
    let outcomes = shard.fetch(parts, max_wait, min_bytes).await;
    let mut response = FetchResponse::default();
    let mut records = Vec::with_capacity(wanted.len());
    // The response-wide byte budget is soft, as in Kafka: the first batch always goes out.
    let mut budget = request.max_bytes.max(0) as usize;
    let mut sent_any = false;
    let mut outcomes = outcomes.into_iter();
    let mut wanted_iter = wanted.iter();
    for (name, partitions) in order {
        let mut topic = FetchableTopicResponse::default();
        topic.topic = topic_name(&name);
        for _ in 0..partitions {
            let (w, outcome) = (
                wanted_iter.next().expect("one per partition"),
                outcomes.next().expect("one per partition"),
            );
            let mut data = PartitionData::default();
            data.partition_index = w.partition;
            data.high_watermark = outcome.high_watermark as i64;
            data.last_stable_offset = outcome.last_stable_offset as i64;
            data.log_start_offset = outcome.log_start_offset as i64;
            data.preferred_read_replica = BrokerId(-1);
            data.aborted_transactions = Some(aborted_transactions(&outcome.aborted));
            if let Some(e) = &outcome.error {
                data.error_code = match e {
                    PartitionError::Corrupt(_) => code::KAFKA_STORAGE_ERROR,
                    other => partition_error_code(other),
                };
            }
            let mut kept = Vec::new();
            for batch in outcome.batches {
                if sent_any && batch.len() > budget {
                    break;
                }
                budget = budget.saturating_sub(batch.len());
                sent_any = true;
                kept.push(batch);
            }
            records.push(kept);
            topic.partitions.push(data);
        }
        response.responses.push(topic);
    }
    (response, records)
}

/// Fetch's aborted transactions: a `read_committed` reader drops the records of each
/// producer from its first offset up to that producer's next abort marker.
fn aborted_transactions(aborted: &[oxbow_storage::AbortedTxn]) -> Vec<AbortedTransaction> {
    (aborted.iter())
        .map(|a| {
            let mut out = AbortedTransaction::default();
            out.producer_id = ProducerId(a.producer_id);
            out.first_offset = a.first_offset as i64;
            out
        })
        .collect()
}

async fn list_offsets(
    shard: &Shard,
    gate: &Gate<'_>,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let describable = gate.topic(&name, Operation::Describe);
        let count = shard.partition_count(&name);
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic_name(&name);
        for partition in topic.partitions {
            let mut answer = ListOffsetsPartitionResponse::default();
            answer.partition_index = partition.partition_index;
            answer.timestamp = -1;
            answer.offset = -1;
            let result = match known_partition(count, partition.partition_index) {
                _ if !describable => Err(PartitionError::TopicAuthorizationFailed),
                Some(p) => {
                    let topic = Arc::from(name.as_str());
                    let committed = request.isolation_level == 1;
                    shard
                        .list_offset(topic, p, partition.timestamp, committed)
                        .await
                }
                None => Err(PartitionError::UnknownTopicOrPartition),
            };
            match result {
                Ok((offset, timestamp)) => {
                    answer.offset = offset;
                    answer.timestamp = timestamp;
                }
                Err(e) => answer.error_code = partition_error_code(&e),
            }
            out.partitions.push(answer);
        }
        response.topics.push(out);
    }
    response
}

async fn create_topics(
    shard: &Shard,
    gate: &Gate<'_>,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let partitions = match topic.num_partitions {
            -1 => shard.config.default_partitions as i64,
            n => n as i64,
        };
        let configs: Vec<(String, String)> = topic
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let mut result = CreatableTopicResult::default();
        result.name = topic_name(&name);
        result.num_partitions = partitions as i32;
        let replication_factor = match topic.replication_factor {
            -1 => shard.config.default_replication_factor as i16,
            n => n,
        };
        result.replication_factor = replication_factor;
        let outcome = if !gate.may_create_topic(&name) {
            let why = "not authorized to create it".to_string();
            Err((code::TOPIC_AUTHORIZATION_FAILED, why))
        } else if let Err(why) = check_replication_factor(shard, replication_factor) {
            Err((code::INVALID_REPLICATION_FACTOR, why))
        } else if let Err(e) = shard
            .config
            .log
            .with_overrides(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            Err((code::INVALID_CONFIG, e.to_string()))
        } else if request.validate_only {
            match (
                oxbow_storage::layout::validate_topic_name(&name),
                shard.partition_count(&name),
            ) {
                (Err(e), _) => Err((code::INVALID_TOPIC, e.to_string())),
                (_, Some(_)) => Err((code::TOPIC_ALREADY_EXISTS, "topic already exists".into())),
                _ if partitions < 1 => {
                    Err((code::INVALID_PARTITIONS, "at least one partition".into()))
                }
                _ => Ok(()),
            }
        } else {
            let replicas = replication_factor as usize;
            shard
                .create_replicated_topic(name.clone(), partitions, replicas, configs)
                .await
                .map_err(|e| {
                    let code = match e {
                        CreateTopicError::Exists => code::TOPIC_ALREADY_EXISTS,
                        CreateTopicError::InvalidName(_) => code::INVALID_TOPIC,
                        CreateTopicError::InvalidPartitions(..) => code::INVALID_PARTITIONS,
                        CreateTopicError::InvalidConfig(_) => code::INVALID_CONFIG,
                        CreateTopicError::InvalidReplication(_) => code::INVALID_REPLICATION_FACTOR,
                        CreateTopicError::TimedOut(_) => code::REQUEST_TIMED_OUT,
                        CreateTopicError::Storage(_) => code::KAFKA_STORAGE_ERROR,
                    };
                    (code, e.to_string())
                })
        };
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = Some(text(&message));
        }
        response.topics.push(result);
    }
    response
}

async fn delete_topics(
    shard: &Shard,
    gate: &Gate<'_>,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    for name in request.topic_names {
        let mut result = DeletableTopicResult::default();
        if !gate.topic(&name, Operation::Delete) {
            result.error_code = code::TOPIC_AUTHORIZATION_FAILED;
        } else if let Err(e) = shard.delete_topic(name.0.to_string()).await {
            result.error_code = partition_error_code(&e);
            result.error_message = Some(text(&e.to_string()));
        }
        result.name = Some(name);
        response.responses.push(result);
    }
    response
}

/// A replication factor CreateTopics may ask for: one up to the unfenced brokers (-1, the
/// broker's default, is one).
fn check_replication_factor(shard: &Shard, asked: i16) -> Result<(), String> {
    let brokers = shard.metadata().unfenced_brokers().count().max(1);
    match asked {
        n if n < 1 => Err(oxbow_cluster::controller::PlacementError::NoReplicas.to_string()),
        n if n as usize > brokers => {
            Err(oxbow_cluster::controller::PlacementError::TooFewBrokers {
                wanted: n as usize,
                brokers,
            }
            .to_string())
        }
        _ => Ok(()),
    }
}
