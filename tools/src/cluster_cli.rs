//! `oxbow cluster status | remove-node | rebalance | decommission` and `oxbow partition
//! reassign | reassignments | delete-records`: the
//! cluster as its Kafka listeners describe it (Metadata for brokers and partitions,
//! DescribeQuorum for the metadata group, asked of the group's leader, UnregisterBroker to
//! remove a broker, Alter/ListPartitionReassignments to move partitions, DeleteRecords asked
//! of the partition's leader).

use crate::access::KafkaAccess;
use crate::bench::kafka::Connection;
use clap::Subcommand;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::describe_quorum_response::ReplicaState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, DeleteRecordsRequest, DescribeQuorumRequest, ListPartitionReassignmentsRequest,
    MetadataRequest, MetadataResponse, TopicName, UnregisterBrokerRequest,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;

/// The metadata log's name in DescribeQuorum (KRaft's).
const METADATA_TOPIC: &str = "__cluster_metadata";
/// Kafka's NOT_LEADER_OR_FOLLOWER: DescribeQuorum asked of a node that does not lead.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// `oxbow cluster ...`
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members of the metadata group and their progress, brokers, partitions and leaders per
    /// broker, offline and under-replicated partitions.
    Status,
    /// Remove a broker that holds no replicas: out of the metadata group, then unregistered.
    RemoveNode {
        /// Broker id.
        id: i32,
    },
    /// Even out the replicas over the live brokers (after a node joins): moves replicas from
    /// the fullest brokers to the emptiest, preferred leaders along, and waits for the moves.
    Rebalance {
        /// Print the moves without starting them.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for the moves, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Move every replica off a broker (each to the live broker with the fewest replicas that
    /// lacks one), wait for the moves, then remove the broker as `remove-node` does.
    Decommission {
        /// Broker id.
        id: i32,
        /// How long to wait for the moves, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
}

/// `oxbow partition ...`
#[derive(Subcommand, Debug)]
pub enum PartitionCommand {
    /// Move a partition to other brokers: the new replicas catch up from the leader, then the
    /// partition keeps only these (the first is its preferred leader).
    Reassign {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long)]
        partition: i32,
        /// Broker ids, comma-separated, the preferred leader first.
        #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
        replicas: Vec<i32>,
        /// Call off the partition's move in progress: it goes back to the replicas it had.
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
    },
    /// Reassignments in progress, with the replicas still being added and removed.
    Reassignments,
    /// Delete a partition's records below an offset (Kafka's DeleteRecords): its log starts
    /// there from now on, on every replica.
    DeleteRecords {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long)]
        partition: i32,
        /// The new first offset; -1 deletes everything readable (up to the high watermark).
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
    },
}

/// Runs `work` with a connection to the Kafka listener at `bootstrap`, on a client runtime.
fn with_connection<F, Fut>(bootstrap: &str, access: &KafkaAccess, work: F) -> Result<(), String>
where
    F: FnOnce(Connection) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the client runtime: {e}"))?;
    runtime.block_on(async move { work(Connection::open(bootstrap, access).await?).await })
}

/// Runs a partition command against the Kafka listener at `bootstrap`.
pub fn run_partition(
    bootstrap: &str,
    access: &KafkaAccess,
    command: PartitionCommand,
) -> Result<(), String> {
    with_connection(bootstrap, access, |mut connection| async move {
        match command {
            PartitionCommand::Reassign {
                topic,
                partition,
                replicas,
                cancel,
            } => {
                let name = TopicName(StrBytes::from_string(topic.clone()));
                let ids = (!cancel).then(|| replicas.iter().map(|&b| BrokerId(b)).collect());
                crate::reassign::reassign(&mut connection, &[(name, partition, ids)]).await?;
                match cancel {
                    true => println!("{topic}/{partition} move cancelled"),
                    false => println!("{topic}/{partition} moving to {replicas:?}"),
                }
                Ok(())
            }
            PartitionCommand::DeleteRecords {
                topic,
                partition,
                before,
            } => {
                let start = delete_records(&mut connection, &topic, partition, before).await?;
                println!("{topic}/{partition} starts at {start}");
                Ok(())
            }
            PartitionCommand::Reassignments => {
                let request = ListPartitionReassignmentsRequest::default().with_topics(None);
                let answer = connection.call(0, &request).await?;
                let ids = |brokers: &[BrokerId]| brokers.iter().map(|b| b.0).collect::<Vec<_>>();
                for topic in &answer.topics {
                    for p in &topic.partitions {
                        println!(
                            "{}/{} replicas {:?} adding {:?} removing {:?}",
                            topic.name.as_str(),
                            p.partition_index,
                            ids(&p.replicas),
                            ids(&p.adding_replicas),
                            ids(&p.removing_replicas)
                        );
                    }
                }
                Ok(())
            }
        }
    })
}

/// Runs a cluster command against the Kafka listener at `bootstrap`.
pub fn run(bootstrap: &str, access: &KafkaAccess, command: ClusterCommand) -> Result<(), String> {
    with_connection(bootstrap, access, |mut connection| async move {
        match command {
            ClusterCommand::Status => status(&mut connection).await,
            ClusterCommand::RemoveNode { id } => remove_node(&mut connection, id).await,
            ClusterCommand::Rebalance { dry_run, timeout_s } => {
                let timeout = std::time::Duration::from_secs(timeout_s);
                crate::reassign::rebalance(&mut connection, dry_run, timeout).await
            }
            ClusterCommand::Decommission { id, timeout_s } => {
                let timeout = std::time::Duration::from_secs(timeout_s);
                crate::reassign::drain(&mut connection, id, timeout).await?;
                remove_node(&mut connection, id).await
            }
        }
    })
}

/// Asks the partition's leader to delete the records below `before`; the new log start.
async fn delete_records(
    connection: &mut Connection,
    topic: &str,
    partition: i32,
    before: i64,
) -> Result<i64, String> {
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name.clone())),
    ]));
    let metadata: MetadataResponse = connection.call(12, &request).await?;
    let described = (metadata.topics.iter().flat_map(|t| &t.partitions))
        .find(|p| p.partition_index == partition);
    let leader = match described {
        Some(p) if p.leader_id.0 >= 0 => p.leader_id.0,
        Some(_) => return Err(format!("{topic}/{partition} has no leader now")),
        None => return Err(format!("{topic}/{partition} does not exist")),
    };
    let address = crate::group_cli::address(&metadata, leader)?;
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name)
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(partition)
                .with_offset(before)])]);
    let answer = connection
        .open_to(&address)
        .await?
        .call(2, &request)
        .await?;
    let answered = (answer.topics.iter().flat_map(|t| &t.partitions))
        .find(|p| p.partition_index == partition)
        .ok_or("DeleteRecords answered no partition")?;
    match ResponseError::try_from_code(answered.error_code) {
        None => Ok(answered.low_watermark),
        Some(e) => Err(format!("deleting records of {topic}/{partition}: {e}")),
    }
}

async fn remove_node(connection: &mut Connection, id: i32) -> Result<(), String> {
    let request = UnregisterBrokerRequest::default().with_broker_id(BrokerId(id));
    let answer = connection.call(0, &request).await?;
    match answer.error_code {
        0 => {
            println!("broker {id} removed");
            Ok(())
        }
        code => Err(format!(
            "removing broker {id}: error {code}: {}",
            answer.error_message.as_deref().unwrap_or("")
        )),
    }
}

async fn status(connection: &mut Connection) -> Result<(), String> {
    let metadata: MetadataResponse = connection
        .call(12, &MetadataRequest::default().with_topics(None))
        .await?;
    let addresses: BTreeMap<i32, String> = (metadata.brokers.iter())
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    let cluster_id = metadata.cluster_id.as_deref().unwrap_or("-");
    println!("cluster {cluster_id}");
    let mut quorum = describe_quorum(connection).await?;
    if quorum.error_code == NOT_LEADER_OR_FOLLOWER {
        // Only the leader knows its members' progress: ask it.
        if let Some(addr) = addresses.get(&quorum.leader_id.0) {
            quorum = describe_quorum(&mut connection.open_to(addr).await?).await?;
        }
    }
    println!(
        "metadata group: leader {}, term {}, commit index {}",
        quorum.leader_id.0, quorum.leader_epoch, quorum.high_watermark
    );
    let members = (quorum.current_voters.iter().map(|r| ("voter", r)))
        .chain(quorum.observers.iter().map(|r| ("learner", r)));
    for (role, replica) in members {
        println!("  {role:<8} {}", describe_member(replica, &addresses));
    }
    let mut partitions: BTreeMap<i32, (usize, usize)> = BTreeMap::new();
    let (mut offline, mut under_replicated) = (Vec::new(), Vec::new());
    for topic in &metadata.topics {
        let name = topic.name.as_ref().map_or("?", |n| n.as_str());
        for p in &topic.partitions {
            for replica in &p.replica_nodes {
                partitions.entry(replica.0).or_default().0 += 1;
            }
            match p.leader_id.0 {
                -1 => offline.push(format!("{name}/{}", p.partition_index)),
                leader => partitions.entry(leader).or_default().1 += 1,
            }
            if p.isr_nodes.len() < p.replica_nodes.len() {
                under_replicated.push(format!("{name}/{}", p.partition_index));
            }
        }
    }
    println!("brokers (fenced ones are not listed):");
    for (id, addr) in &addresses {
        let (replicas, leads) = partitions.get(id).copied().unwrap_or_default();
        println!("  {id:<4} {addr:<24} replicas {replicas:<6} leads {leads}");
    }
    println!("offline partitions: {}", listed(&offline));
    println!("under-replicated partitions: {}", listed(&under_replicated));
    Ok(())
}

async fn describe_quorum(
    connection: &mut Connection,
) -> Result<kafka_protocol::messages::describe_quorum_response::PartitionData, String> {
    let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(vec![PartitionData::default()])]);
    let mut answer = connection.call(1, &request).await?;
    let partition = (answer.topics.pop())
        .and_then(|mut topic| topic.partitions.pop())
        .ok_or("DescribeQuorum answered no partition")?;
    Ok(partition)
}

fn describe_member(replica: &ReplicaState, addresses: &BTreeMap<i32, String>) -> String {
    let id = replica.replica_id.0;
    let heard = match replica.last_fetch_timestamp {
        -1 => "never heard".to_string(),
        at => format!(
            "heard {} ms ago",
            oxbow_storage::now_ms().saturating_sub(at).max(0)
        ),
    };
    let fenced = match addresses.contains_key(&id) {
        true => "",
        false => ", fenced or unregistered",
    };
    format!(
        "{id:<4} log end {:<8} {heard}{fenced}",
        replica.log_end_offset
    )
}

fn listed(names: &[String]) -> String {
    match names.is_empty() {
        true => "none".to_string(),
        false => format!("{} ({})", names.len(), names.join(", ")),
    }
}
