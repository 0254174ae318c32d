//! `oxbow group list | describe G | delete G | reset-offsets G`: Kafka consumer groups as
//! `kafka-consumer-groups.sh` shows and changes them, through the Kafka listeners (ListGroups
//! on every broker; FindCoordinator, then DescribeGroups, OffsetFetch, OffsetCommit and
//! DeleteGroups on the group's coordinator; ListOffsets on each partition's leader for the lag
//! and the reset targets), as text or JSON.

use crate::access::KafkaAccess;
use crate::bench::kafka::Connection;
use crate::output::{print, Output};
use bytes::{Buf, Bytes};
use clap::Subcommand;
use kafka_protocol::messages::describe_groups_response;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    BrokerId, ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, DeleteGroupsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde::Serialize;
use std::collections::BTreeMap;

/// `oxbow group ...`
#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Every consumer group of the cluster, with its state.
    List,
    /// A group's members and, per partition it committed, the committed offset, the log end
    /// and the lag, with the member the partition is assigned to.
    Describe {
        /// Group id.
        group: String,
    },
    /// Delete a group that has no members, with its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets on every partition of a topic (the group must have no
    /// members); prints the plan, and commits it only with --execute.
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose partitions are reset.
        #[arg(long)]
        topic: String,
        /// earliest, latest, offset:N (clamped to the log) or timestamp:MS (the first record
        /// at or after it, else the log end).
        #[arg(long, value_parser = parse_target)]
        to: Target,
        /// Commit the new offsets (without it, a dry run).
        #[arg(long)]
        execute: bool,
    },
}

/// Where `reset-offsets` moves a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The log start.
    Earliest,
    /// The log end.
    Latest,
    /// This offset, clamped to the log.
    Offset(i64),
    /// The first record at or after this time (milliseconds since the epoch).
    Timestamp(i64),
}

fn parse_target(text: &str) -> Result<Target, String> {
    let number = |n: &str| {
        n.parse::<i64>()
            .map_err(|_| format!("{n:?} is not a number"))
    };
    match text.split_once(':') {
        None if text == "earliest" => Ok(Target::Earliest),
        None if text == "latest" => Ok(Target::Latest),
        Some(("offset", n)) => Ok(Target::Offset(number(n)?)),
        Some(("timestamp", n)) => Ok(Target::Timestamp(number(n)?)),
        _ => Err(format!(
            "{text:?}: earliest, latest, offset:N or timestamp:MS"
        )),
    }
}

#[derive(Serialize)]
struct ListedGroup {
    group: String,
    state: String,
    protocol_type: String,
    /// `classic`, or `consumer` for a group of the consumer group protocol (KIP-848).
    group_type: String,
}

#[derive(Serialize)]
struct Member {
    member_id: String,
    client_id: String,
    host: String,
    partitions: Vec<(String, i32)>,
}

#[derive(Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    committed: i64,
    log_end: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
}

#[derive(Serialize)]
struct Reset {
    topic: String,
    partition: i32,
    offset: i64,
}

#[derive(Serialize)]
struct DescribedGroup {
    group: String,
    state: String,
    /// As in [`ListedGroup`].
    group_type: String,
    coordinator: i32,
    members: Vec<Member>,
    partitions: Vec<PartitionLag>,
}

/// Runs a group command against the Kafka listener at `bootstrap`.
pub fn run(
    bootstrap: &str,
    access: &KafkaAccess,
    output: Output,
    command: GroupCommand,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the client runtime: {e}"))?;
    runtime.block_on(async {
        let mut connection = Connection::open(bootstrap, access).await?;
        match command {
            GroupCommand::List => print(output, &list(&mut connection).await?, print_list),
            GroupCommand::Describe { group } => {
                let described = describe(&mut connection, &group).await?;
                print(output, &described, print_described)
            }
            GroupCommand::Delete { group } => delete(&mut connection, &group).await,
            GroupCommand::ResetOffsets {
                group,
                topic,
                to,
                execute,
            } => {
                let plan = reset(&mut connection, &group, &topic, to, execute).await?;
                print(output, &plan, |plan: &Vec<Reset>| {
                    println!("topic\tpartition\tnew_offset");
                    for r in plan {
                        println!("{}\t{}\t{}", r.topic, r.partition, r.offset);
                    }
                })?;
                if !execute {
                    eprintln!("dry run: add --execute to commit these offsets");
                }
                Ok(())
            }
        }
    })
}

fn print_list(groups: &Vec<ListedGroup>) {
    for g in groups {
        println!(
            "{}\t{}\t{}\t{}",
            g.group, g.state, g.protocol_type, g.group_type
        );
    }
}

fn print_described(g: &DescribedGroup) {
    println!(
        "group {} ({}, {} protocol), coordinator {}",
        g.group, g.state, g.group_type, g.coordinator
    );
    for m in &g.members {
        println!(
            "  member {} client {} host {}",
            m.member_id, m.client_id, m.host
        );
    }
    println!("topic\tpartition\tcommitted\tlog_end\tlag\tmember");
    let or_dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    for p in &g.partitions {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            p.topic,
            p.partition,
            p.committed,
            or_dash(p.log_end),
            or_dash(p.lag),
            p.member_id.as_deref().unwrap_or("-")
        );
    }
}

async fn metadata(connection: &mut Connection) -> Result<MetadataResponse, String> {
    connection
        .call(12, &MetadataRequest::default().with_topics(None))
        .await
}

/// The address of broker `id` in `metadata`.
pub(crate) fn address(metadata: &MetadataResponse, id: i32) -> Result<String, String> {
    (metadata.brokers.iter())
        .find(|b| b.node_id.0 == id)
        .map(|b| format!("{}:{}", b.host, b.port))
        .ok_or_else(|| format!("broker {id} is not in the metadata"))
}

async fn list(connection: &mut Connection) -> Result<Vec<ListedGroup>, String> {
    let metadata = metadata(connection).await?;
    let mut groups = Vec::new();
    for broker in &metadata.brokers {
        let mut there = connection
            .open_to(&address(&metadata, broker.node_id.0)?)
            .await?;
        let answer = there.call(5, &ListGroupsRequest::default()).await?;
        if answer.error_code != 0 {
            return Err(format!(
                "ListGroups on broker {}: error {}",
                broker.node_id.0, answer.error_code
            ));
        }
        groups.extend(answer.groups.into_iter().map(|g| ListedGroup {
            group: g.group_id.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            group_type: g.group_type.to_string(),
        }));
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(groups)
}

/// A connection to `group`'s coordinator, and its broker id.
async fn coordinator(
    connection: &mut Connection,
    group: &str,
) -> Result<(Connection, i32), String> {
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    let found = connection.call(3, &request).await?;
    if found.error_code != 0 {
        return Err(format!(
            "FindCoordinator for {group}: error {}",
            found.error_code
        ));
    }
    let addr = format!("{}:{}", found.host, found.port);
    Ok((connection.open_to(&addr).await?, found.node_id.0))
}

/// A connection to `group`'s coordinator, its broker id, and the group as it describes it.
async fn at_coordinator(
    connection: &mut Connection,
    group: &str,
) -> Result<(Connection, i32, describe_groups_response::DescribedGroup), String> {
    let (mut home, coordinator_id) = coordinator(connection, group).await?;
    let id = GroupId(StrBytes::from_string(group.into()));
    let described = home
        .call(5, &DescribeGroupsRequest::default().with_groups(vec![id]))
        .await?;
    let g = (described.groups.into_iter().next()).ok_or("DescribeGroups answered no group")?;
    if g.error_code != 0 {
        return Err(format!(
            "DescribeGroups for {group}: error {}",
            g.error_code
        ));
    }
    Ok((home, coordinator_id, g))
}

async fn describe(connection: &mut Connection, group: &str) -> Result<DescribedGroup, String> {
    let (mut home, coordinator_id, g) = at_coordinator(connection, group).await?;
    let id = GroupId(StrBytes::from_string(group.into()));
    // No classic group of that name: it may be one of the consumer group protocol.
    let modern = match g.group_state.as_str() {
        "Dead" => consumer_group(&mut home, group).await?,
        _ => None,
    };
    let (state, group_type, members) = match modern {
        Some(found) => found,
        None => {
            let members = (g.members.into_iter())
                .map(|m| Member {
                    member_id: m.member_id.to_string(),
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    partitions: assigned(m.member_assignment),
                })
                .collect();
            (g.group_state.to_string(), "classic", members)
        }
    };
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &members {
        for p in &m.partitions {
            owner.insert(p.clone(), m.member_id.clone());
        }
    }
    let fetched = home
        .call(
            7,
            &OffsetFetchRequest::default()
                .with_group_id(id)
                .with_topics(None),
        )
        .await?;
    if fetched.error_code != 0 {
        return Err(format!(
            "OffsetFetch for {group}: error {}",
            fetched.error_code
        ));
    }
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in &fetched.topics {
        for p in topic.partitions.iter().filter(|p| p.committed_offset >= 0) {
            committed.insert(
                (topic.name.to_string(), p.partition_index),
                p.committed_offset,
            );
        }
    }
    let ends = list_offsets(connection, committed.keys().chain(owner.keys()), -1).await?;
    let mut keys: Vec<&(String, i32)> = committed.keys().chain(owner.keys()).collect();
    keys.sort();
    keys.dedup();
    let partitions = (keys.into_iter())
        .map(|key| {
            let at = committed.get(key).copied().unwrap_or(-1);
            let log_end = ends.get(key).copied();
            PartitionLag {
                topic: key.0.clone(),
                partition: key.1,
                committed: at,
                log_end,
                lag: log_end.filter(|_| at >= 0).map(|end| (end - at).max(0)),
                member_id: owner.get(key).cloned(),
            }
        })
        .collect();
    Ok(DescribedGroup {
        group: group.to_string(),
        state,
        group_type: group_type.to_string(),
        coordinator: coordinator_id,
        members,
        partitions,
    })
}

/// `group` as ConsumerGroupDescribe shows it at its coordinator (state, type, members), or
/// `None` if it is not a group of the consumer group protocol.
async fn consumer_group(
    home: &mut Connection,
    group: &str,
) -> Result<Option<(String, &'static str, Vec<Member>)>, String> {
    let id = GroupId(StrBytes::from_string(group.into()));
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![id]);
    let described = home.call(0, &request).await?;
    let Some(g) = described
        .groups
        .into_iter()
        .next()
        .filter(|g| g.error_code == 0)
    else {
        return Ok(None);
    };
    let members = (g.members.into_iter())
        .map(|m| Member {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            partitions: (m.assignment.topic_partitions.iter())
                .flat_map(|t| t.partitions.iter().map(|&p| (t.topic_name.to_string(), p)))
                .collect(),
        })
        .collect();
    Ok(Some((g.group_state.to_string(), "consumer", members)))
}

/// The partitions a member's assignment (Kafka's consumer protocol) names; none if it does
/// not decode (another protocol type).
fn assigned(mut assignment: Bytes) -> Vec<(String, i32)> {
    if assignment.remaining() < 2 {
        return Vec::new();
    }
    let version = assignment.get_i16();
    let Ok(decoded) = ConsumerProtocolAssignment::decode(&mut assignment, version) else {
        return Vec::new();
    };
    (decoded.assigned_partitions.into_iter())
        .flat_map(|t| {
            let topic = t.topic.to_string();
            t.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect()
}

/// Each partition's offset at `timestamp` (Kafka's: -1 the log end, -2 the log start, else the
/// first record at or after it, -1 if none), asked of its leader (ListOffsets).
async fn list_offsets<'a>(
    connection: &mut Connection,
    partitions: impl Iterator<Item = &'a (String, i32)>,
    timestamp: i64,
) -> Result<BTreeMap<(String, i32), i64>, String> {
    let metadata = metadata(connection).await?;
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for (topic, partition) in partitions {
        let leader = (metadata.topics.iter())
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
            .and_then(|t| {
                t.partitions
                    .iter()
                    .find(|p| p.partition_index == *partition)
            })
            .map(|p| p.leader_id.0);
        if let Some(leader) = leader.filter(|&l| l >= 0) {
            let topics = by_leader.entry(leader).or_default();
            topics.entry(topic.clone()).or_default().push(*partition);
        }
    }
    let mut ends = BTreeMap::new();
    for (leader, topics) in by_leader {
        let topics = (topics.into_iter())
            .map(|(name, partitions)| {
                let partitions = (partitions.into_iter())
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect();
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect();
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(topics);
        let mut there = connection.open_to(&address(&metadata, leader)?).await?;
        let answer = there.call(4, &request).await?;
        for topic in answer.topics {
            for p in topic.partitions.into_iter().filter(|p| p.error_code == 0) {
                ends.insert((topic.name.to_string(), p.partition_index), p.offset);
            }
        }
    }
    Ok(ends)
}

async fn delete(connection: &mut Connection, group: &str) -> Result<(), String> {
    let (mut home, _) = coordinator(connection, group).await?;
    let id = GroupId(StrBytes::from_string(group.into()));
    let answer = home
        .call(
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![id]),
        )
        .await?;
    let result = answer
        .results
        .into_iter()
        .next()
        .ok_or("DeleteGroups answered no group")?;
    match result.error_code {
        0 => {
            println!("group {group} deleted");
            Ok(())
        }
        68 => Err(format!("group {group} has members: stop them first")),
        69 => Err(format!("no group {group}")),
        code => Err(format!("deleting group {group}: error {code}")),
    }
}

/// `reset-offsets`: the new offset of every partition of `topic`, committed with `execute`.
async fn reset(
    connection: &mut Connection,
    group: &str,
    topic: &str,
    to: Target,
    execute: bool,
) -> Result<Vec<Reset>, String> {
    let (mut home, _, described) = at_coordinator(connection, group).await?;
    if !described.members.is_empty() {
        return Err(format!("group {group} has members: stop them first"));
    }
    let id = GroupId(StrBytes::from_string(group.into()));
    let metadata = metadata(connection).await?;
    let count = (metadata.topics.iter())
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        .map(|t| t.partitions.len() as i32)
        .ok_or_else(|| format!("no topic {topic}"))?;
    let keys: Vec<(String, i32)> = (0..count).map(|p| (topic.to_string(), p)).collect();
    let starts = list_offsets(connection, keys.iter(), -2).await?;
    let ends = list_offsets(connection, keys.iter(), -1).await?;
    let at_time = match to {
        Target::Timestamp(ms) => list_offsets(connection, keys.iter(), ms).await?,
        _ => BTreeMap::new(),
    };
    let mut plan = Vec::new();
    for key in &keys {
        let (start, end) = match (starts.get(key), ends.get(key)) {
            (Some(&start), Some(&end)) => (start, end),
            _ => return Err(format!("{topic}/{}: no offsets (no leader?)", key.1)),
        };
        let offset = match to {
            Target::Earliest => start,
            Target::Latest => end,
            Target::Offset(n) => n.clamp(start, end),
            Target::Timestamp(_) => at_time.get(key).copied().filter(|&o| o >= 0).unwrap_or(end),
        };
        plan.push(Reset {
            topic: topic.to_string(),
            partition: key.1,
            offset,
        });
    }
    if execute {
        let partitions = (plan.iter())
            .map(|r| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(r.partition)
                    .with_committed_offset(r.offset)
            })
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(id)
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(partitions)]);
        let answer = home.call(8, &request).await?;
        let refused = (answer.topics.iter())
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.error_code != 0);
        if let Some(p) = refused {
            return Err(format!(
                "committing {topic}/{}: error {}",
                p.partition_index, p.error_code
            ));
        }
    }
    Ok(plan)
}
