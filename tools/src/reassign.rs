//! Moving partitions from the command line (AlterPartitionReassignments): `oxbow partition
//! reassign` asks for one move (or calls one off); `oxbow cluster decommission N` moves every
//! replica on broker N to the live broker with the fewest replicas that lacks one, keeping its
//! place in the replica list; `oxbow cluster rebalance` evens the replicas out over the live
//! brokers (after a node joins, `balance.rs` plans it). Both wait until no reassignment is in
//! progress.

use crate::bench::kafka::Connection;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest,
    MetadataRequest, MetadataResponse, TopicName,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One move: topic, partition, the replicas asked for (`None`: call its move off).
pub type Move = (TopicName, i32, Option<Vec<BrokerId>>);

/// Asks for `moves` in one request; an error names the first move refused or left unanswered.
pub async fn reassign(connection: &mut Connection, moves: &[Move]) -> Result<(), String> {
    let mut by_topic: BTreeMap<TopicName, Vec<ReassignablePartition>> = BTreeMap::new();
    for (topic, partition, replicas) in moves {
        by_topic.entry(topic.clone()).or_default().push(
            ReassignablePartition::default()
                .with_partition_index(*partition)
                .with_replicas(replicas.clone()),
        );
    }
    let topics = (by_topic.into_iter())
        .map(|(name, partitions)| {
            ReassignableTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    let request = AlterPartitionReassignmentsRequest::default().with_topics(topics);
    let answer = connection.call(0, &request).await?;
    for (topic, partition, _) in moves {
        let result = (answer.responses.iter())
            .filter(|t| t.name == *topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == *partition);
        let at = format!("{}/{partition}", topic.as_str());
        match result {
            None => return Err(format!("moving {at}: no answer")),
            Some(p) if p.error_code != 0 => {
                return Err(format!(
                    "moving {at}: error {}: {}",
                    p.error_code,
                    p.error_message.as_deref().unwrap_or("")
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Moves every replica off broker `id` and waits until the moves are done (or `timeout`).
pub async fn drain(connection: &mut Connection, id: i32, timeout: Duration) -> Result<(), String> {
    let metadata: MetadataResponse = connection
        .call(12, &MetadataRequest::default().with_topics(None))
        .await?;
    let moves = plan(&metadata, id)?;
    if moves.is_empty() {
        println!("broker {id} holds no replicas");
        return Ok(());
    }
    reassign(connection, &moves).await?;
    println!("moving {} partitions off broker {id}", moves.len());
    wait_for_moves(connection, timeout).await?;
    println!("broker {id} holds no replicas");
    Ok(())
}

/// Evens the replicas out over the live brokers (`balance::plan`) and waits for the moves;
/// with `dry_run`, only prints them.
pub async fn rebalance(
    connection: &mut Connection,
    dry_run: bool,
    timeout: Duration,
) -> Result<(), String> {
    if in_progress(connection).await? > 0 {
        return Err("reassignments are in progress: wait for them or cancel them first".into());
    }
    let metadata: MetadataResponse = connection
        .call(12, &MetadataRequest::default().with_topics(None))
        .await?;
    let moves = crate::balance::plan(&metadata)?;
    for (topic, partition, replicas) in &moves {
        let ids: Vec<i32> = replicas.iter().flatten().map(|b| b.0).collect();
        println!("{}/{partition} to {ids:?}", topic.as_str());
    }
    if moves.is_empty() {
        println!("balanced: nothing to move");
        return Ok(());
    }
    if dry_run {
        println!("{} moves planned (dry run: none started)", moves.len());
        return Ok(());
    }
    reassign(connection, &moves).await?;
    println!("moving {} partitions", moves.len());
    wait_for_moves(connection, timeout).await?;
    println!("balanced");
    Ok(())
}

/// How many partitions are being moved.
async fn in_progress(connection: &mut Connection) -> Result<usize, String> {
    let listed = connection
        .call(
            0,
            &ListPartitionReassignmentsRequest::default().with_topics(None),
        )
        .await?;
    Ok(listed.topics.iter().map(|t| t.partitions.len()).sum())
}

/// Waits until no reassignment is in progress, at most `timeout`.
async fn wait_for_moves(connection: &mut Connection, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = in_progress(connection).await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{left} moves still in progress after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where each replica on broker `id` goes: the listed (live) broker with the fewest replicas
/// that holds none of that partition, in the same place in the replica list.
fn plan(metadata: &MetadataResponse, id: i32) -> Result<Vec<Move>, String> {
    let mut load: BTreeMap<i32, usize> = (metadata.brokers.iter())
        .map(|b| b.node_id.0)
        .filter(|&b| b != id)
        .map(|b| (b, 0))
        .collect();
    let partitions =
        (metadata.topics.iter()).flat_map(|t| t.partitions.iter().map(move |p| (t, p)));
    for (_, p) in partitions.clone() {
        for replica in &p.replica_nodes {
            if let Some(n) = load.get_mut(&replica.0) {
                *n += 1;
            }
        }
    }
    let mut moves = Vec::new();
    for (topic, p) in partitions {
        if !p.replica_nodes.iter().any(|r| r.0 == id) {
            continue;
        }
        let name = topic.name.clone().ok_or("a topic without a name")?;
        let replacement = (load.iter())
            .filter(|(b, _)| !p.replica_nodes.iter().any(|r| r.0 == **b))
            .min_by_key(|(b, n)| (**n, **b))
            .map(|(b, _)| *b)
            .ok_or_else(|| {
                let at = format!("{}/{}", name.as_str(), p.partition_index);
                format!("no live broker can take broker {id}'s replica of {at}")
            })?;
        *load.get_mut(&replacement).expect("chosen from it") += 1;
        let replicas = (p.replica_nodes.iter())
            .map(|r| if r.0 == id { BrokerId(replacement) } else { *r })
            .collect();
        moves.push((name, p.partition_index, Some(replicas)));
    }
    Ok(moves)
}
