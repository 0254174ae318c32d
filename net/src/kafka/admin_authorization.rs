//! The ACLs on the admin APIs, with Kafka's answers: a request about the cluster is refused
//! whole with CLUSTER_AUTHORIZATION_FAILED (DescribeCluster is answered to all, as in Kafka); one about topics or groups is served for the
//! resources the principal may act on, the others answered TOPIC_ or
//! GROUP_AUTHORIZATION_FAILED one by one. Listing groups shows those the principal may
//! describe.

use super::groups::refused;
use super::wire::code;
use crate::authorize::Gate;
use kafka_protocol::messages::{
    alter_configs_response, consumer_group_describe_response, create_partitions_response,
    delete_groups_response, delete_records_response, describe_configs_response,
    describe_groups_response, describe_producers_response, incremental_alter_configs_response,
    offset_delete_response, AlterPartitionReassignmentsResponse, AlterUserScramCredentialsResponse,
    DescribeQuorumResponse, DescribeUserScramCredentialsResponse, ElectLeadersResponse,
    ListPartitionReassignmentsResponse, RequestKind, ResponseKind, UnregisterBrokerResponse,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_cluster::Operation;

/// Kafka's resource types in config requests (and, for what is taken out of group requests,
/// ACLs' number for a group).
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const BROKER: i8 = 4;

/// Something taken out of a request because the principal may not act on it.
pub(super) struct DeniedResource {
    /// Its type, as the request names it.
    resource_type: i8,
    name: StrBytes,
    /// The error it is answered with.
    error: i16,
    /// The partitions asked for (DescribeProducers answers each).
    partitions: Vec<i32>,
}

/// Everything taken out of one request.
pub(super) type Denied = Vec<DeniedResource>;

/// A request with what the principal may not do taken out, or its whole refusal.
pub(super) fn admit(
    gate: &Gate<'_>,
    request: RequestKind,
    version: i16,
) -> Result<(RequestKind, Denied), Box<ResponseKind>> {
    let mut denied = Denied::new();
    let cluster = |operation| gate.cluster(operation);
    let no = code::CLUSTER_AUTHORIZATION_FAILED;
    // Requests about the cluster: all or nothing.
    let refusal = match &request {
        RequestKind::DescribeQuorum(_) if !cluster(Operation::Describe) => Some(
            ResponseKind::DescribeQuorum(DescribeQuorumResponse::default().with_error_code(no)),
        ),
        RequestKind::UnregisterBroker(_) if !cluster(Operation::Alter) => Some(
            ResponseKind::UnregisterBroker(UnregisterBrokerResponse::default().with_error_code(no)),
        ),
        RequestKind::ElectLeaders(_) if !cluster(Operation::Alter) => Some(
            ResponseKind::ElectLeaders(ElectLeadersResponse::default().with_error_code(no)),
        ),
        RequestKind::AlterPartitionReassignments(_) if !cluster(Operation::Alter) => {
            Some(ResponseKind::AlterPartitionReassignments(
                AlterPartitionReassignmentsResponse::default().with_error_code(no),
            ))
        }
        RequestKind::ListPartitionReassignments(_) if !cluster(Operation::Describe) => {
            Some(ResponseKind::ListPartitionReassignments(
                ListPartitionReassignmentsResponse::default().with_error_code(no),
            ))
        }
        RequestKind::DescribeUserScramCredentials(_) if !cluster(Operation::Describe) => {
            Some(ResponseKind::DescribeUserScramCredentials(
                DescribeUserScramCredentialsResponse::default().with_error_code(no),
            ))
        }
        RequestKind::AlterUserScramCredentials(r) if !cluster(Operation::Alter) => {
            let mut users: Vec<StrBytes> = (r.upsertions.iter().map(|u| u.name.clone()))
                .chain(r.deletions.iter().map(|d| d.name.clone()))
                .collect();
            users.sort();
            users.dedup();
            let results = (users.into_iter())
                .map(|user| {
                    kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                        .with_user(user)
                        .with_error_code(no)
                })
                .collect();
            Some(ResponseKind::AlterUserScramCredentials(
                AlterUserScramCredentialsResponse::default().with_results(results),
            ))
        }
        RequestKind::OffsetDelete(r) if !gate.group(&r.group_id, Operation::Delete) => {
            refused(&request, version, code::GROUP_AUTHORIZATION_FAILED)
        }
        _ => None,
    };
    if let Some(refusal) = refusal {
        return Err(Box::new(refusal));
    }
    // Requests about topics: served for the permitted ones.
    let mut permitted = |resource_type: i8, name: &StrBytes, operation, partitions: &[i32]| {
        let (allowed, error) = match resource_type {
            TOPIC => (
                gate.topic(name, operation),
                code::TOPIC_AUTHORIZATION_FAILED,
            ),
            BROKER => (gate.cluster(operation), code::CLUSTER_AUTHORIZATION_FAILED),
            GROUP => (
                gate.group(name, operation),
                code::GROUP_AUTHORIZATION_FAILED,
            ),
            _ => (true, code::NONE),
        };
        if !allowed {
            denied.push(DeniedResource {
                resource_type,
                name: name.clone(),
                error,
                partitions: partitions.to_vec(),
            });
        }
        allowed
    };
    let request = match request {
        RequestKind::DescribeConfigs(mut r) => {
            let operation = Operation::DescribeConfigs;
            (r.resources).retain(|x| permitted(x.resource_type, &x.resource_name, operation, &[]));
            RequestKind::DescribeConfigs(r)
        }
        RequestKind::AlterConfigs(mut r) => {
            let operation = Operation::AlterConfigs;
            (r.resources).retain(|x| permitted(x.resource_type, &x.resource_name, operation, &[]));
            RequestKind::AlterConfigs(r)
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            let operation = Operation::AlterConfigs;
            (r.resources).retain(|x| permitted(x.resource_type, &x.resource_name, operation, &[]));
            RequestKind::IncrementalAlterConfigs(r)
        }
        RequestKind::CreatePartitions(mut r) => {
            (r.topics).retain(|t| permitted(TOPIC, &t.name, Operation::Alter, &[]));
            RequestKind::CreatePartitions(r)
        }
        RequestKind::DescribeGroups(mut r) => {
            (r.groups).retain(|g| permitted(GROUP, g, Operation::Describe, &[]));
            RequestKind::DescribeGroups(r)
        }
        RequestKind::ConsumerGroupDescribe(mut r) => {
            (r.group_ids).retain(|g| permitted(GROUP, g, Operation::Describe, &[]));
            RequestKind::ConsumerGroupDescribe(r)
        }
        RequestKind::DeleteGroups(mut r) => {
            (r.groups_names).retain(|g| permitted(GROUP, g, Operation::Delete, &[]));
            RequestKind::DeleteGroups(r)
        }
        RequestKind::OffsetDelete(mut r) => {
            (r.topics).retain(|t| {
                let partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
                permitted(TOPIC, &t.name, Operation::Read, &partitions)
            });
            RequestKind::OffsetDelete(r)
        }
        RequestKind::DescribeProducers(mut r) => {
            (r.topics).retain(|t| permitted(TOPIC, &t.name, Operation::Read, &t.partition_indexes));
            RequestKind::DescribeProducers(r)
        }
        RequestKind::DeleteRecords(mut r) => {
            (r.topics).retain(|t| {
                let partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
                permitted(TOPIC, &t.name, Operation::Delete, &partitions)
            });
            RequestKind::DeleteRecords(r)
        }
        other => other,
    };
    Ok((request, denied))
}

/// Adds to `response` the answers to what [`admit`] took out of its request.
pub(super) fn answer_denied(response: &mut ResponseKind, denied: Denied) {
    for DeniedResource {
        resource_type,
        name,
        error,
        partitions,
    } in denied
    {
        match response {
            ResponseKind::DescribeConfigs(r) => r.results.push(
                describe_configs_response::DescribeConfigsResult::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
                    .with_error_code(error),
            ),
            ResponseKind::AlterConfigs(r) => r.responses.push(
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
                    .with_error_code(error),
            ),
            ResponseKind::IncrementalAlterConfigs(r) => r.responses.push(
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
                    .with_error_code(error),
            ),
            ResponseKind::CreatePartitions(r) => r.results.push(
                create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(kafka_protocol::messages::TopicName(name))
                    .with_error_code(error),
            ),
            ResponseKind::DescribeGroups(r) => r.groups.push(
                describe_groups_response::DescribedGroup::default()
                    .with_group_id(kafka_protocol::messages::GroupId(name))
                    .with_error_code(error),
            ),
            ResponseKind::ConsumerGroupDescribe(r) => r.groups.push(
                consumer_group_describe_response::DescribedGroup::default()
                    .with_group_id(kafka_protocol::messages::GroupId(name))
                    .with_error_code(error),
            ),
            ResponseKind::DeleteGroups(r) => r.results.push(
                delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(kafka_protocol::messages::GroupId(name))
                    .with_error_code(error),
            ),
            ResponseKind::OffsetDelete(r) => r.topics.push(
                offset_delete_response::OffsetDeleteResponseTopic::default()
                    .with_name(kafka_protocol::messages::TopicName(name))
                    .with_partitions(
                        (partitions.into_iter())
                            .map(|index| {
                                offset_delete_response::OffsetDeleteResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(error)
                            })
                            .collect(),
                    ),
            ),
            ResponseKind::DeleteRecords(r) => r.topics.push(
                delete_records_response::DeleteRecordsTopicResult::default()
                    .with_name(kafka_protocol::messages::TopicName(name))
                    .with_partitions(
                        (partitions.into_iter())
                            .map(|index| {
                                delete_records_response::DeleteRecordsPartitionResult::default()
                                    .with_partition_index(index)
                                    .with_low_watermark(-1)
                                    .with_error_code(error)
                            })
                            .collect(),
                    ),
            ),
            ResponseKind::DescribeProducers(r) => r.topics.push(
                describe_producers_response::TopicResponse::default()
                    .with_name(kafka_protocol::messages::TopicName(name))
                    .with_partitions(
                        (partitions.into_iter())
                            .map(|index| {
                                describe_producers_response::PartitionResponse::default()
                                    .with_partition_index(index)
                                    .with_error_code(error)
                            })
                            .collect(),
                    ),
            ),
            _ => {}
        }
    }
}

/// Keeps in a ListGroups answer the groups the principal may describe (all of them with
/// Describe on the cluster), as Kafka does.
pub(super) fn listed_groups(gate: &Gate<'_>, response: &mut ResponseKind) {
    if let ResponseKind::ListGroups(r) = response {
        if !gate.sees_cluster() {
            (r.groups).retain(|g| gate.sees_group(&g.group_id));
        }
    }
}
