//! `oxbow transaction list | describe ID`: Kafka transactions as `kafka-transactions.sh` shows
//! them, through the Kafka listeners (ListTransactions on every broker; FindCoordinator, then
//! DescribeTransactions on the id's coordinator), as text or JSON.

use crate::access::KafkaAccess;
use crate::bench::kafka::Connection;
use crate::group_cli::address;
use crate::output::{print, Output};
use clap::Subcommand;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, FindCoordinatorRequest, ListTransactionsRequest, MetadataRequest,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

/// `oxbow transaction ...`
#[derive(Subcommand, Debug)]
pub enum TransactionCommand {
    /// Every transactional id the cluster's coordinators hold, with its producer and state.
    List {
        /// Only these states (Ongoing, PrepareCommit, CompleteAbort, ...); repeatable.
        #[arg(long)]
        state: Vec<String>,
        /// Only transactions open at least this long (ms), e.g. hanging ones.
        #[arg(long)]
        open_longer_than_ms: Option<i64>,
    },
    /// A transactional id's producer, state, timeout and the partitions of its transaction.
    Describe {
        /// Transactional id.
        id: String,
    },
}

#[derive(Serialize)]
struct Listed {
    transactional_id: String,
    producer_id: i64,
    state: String,
    coordinator: i32,
}

#[derive(Serialize)]
struct Described {
    transactional_id: String,
    coordinator: i32,
    state: String,
    producer_id: i64,
    producer_epoch: i16,
    timeout_ms: i32,
    start_time_ms: i64,
    partitions: Vec<(String, i32)>,
}

/// Runs a transaction command against the Kafka listener at `bootstrap`.
pub fn run(
    bootstrap: &str,
    access: &KafkaAccess,
    output: Output,
    command: TransactionCommand,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the client runtime: {e}"))?;
    runtime.block_on(async {
        let mut connection = Connection::open(bootstrap, access).await?;
        match command {
            TransactionCommand::List {
                state,
                open_longer_than_ms,
            } => {
                let listed = list(&mut connection, state, open_longer_than_ms).await?;
                print(output, &listed, |listed: &Vec<Listed>| {
                    println!("transactional_id\tproducer_id\tstate\tcoordinator");
                    for t in listed {
                        let (id, pid) = (&t.transactional_id, t.producer_id);
                        println!("{id}\t{pid}\t{}\t{}", t.state, t.coordinator);
                    }
                })
            }
            TransactionCommand::Describe { id } => {
                let described = describe(&mut connection, &id).await?;
                print(output, &described, |d: &Described| {
                    println!(
                        "{} ({}), coordinator {}, producer {} epoch {}, timeout {} ms, started {}",
                        d.transactional_id,
                        d.state,
                        d.coordinator,
                        d.producer_id,
                        d.producer_epoch,
                        d.timeout_ms,
                        d.start_time_ms
                    );
                    for (topic, partition) in &d.partitions {
                        println!("  {topic}\t{partition}");
                    }
                })
            }
        }
    })
}

async fn list(
    connection: &mut Connection,
    states: Vec<String>,
    open_longer_than_ms: Option<i64>,
) -> Result<Vec<Listed>, String> {
    let metadata = connection
        .call(
            12,
            &MetadataRequest::default().with_topics(Some(Vec::new())),
        )
        .await?;
    let mut listed = Vec::new();
    for broker in &metadata.brokers {
        let id = broker.node_id.0;
        let mut there = connection.open_to(&address(&metadata, id)?).await?;
        let mut request = ListTransactionsRequest::default();
        request.state_filters = states.iter().cloned().map(StrBytes::from_string).collect();
        request.duration_filter = open_longer_than_ms.unwrap_or(-1);
        let answer = there.call(1, &request).await?;
        if answer.error_code != 0 {
            return Err(format!(
                "ListTransactions on broker {id}: error {}",
                answer.error_code
            ));
        }
        if let Some(unknown) = answer.unknown_state_filters.first() {
            return Err(format!("unknown transaction state {unknown}"));
        }
        listed.extend(answer.transaction_states.into_iter().map(|t| Listed {
            transactional_id: t.transactional_id.to_string(),
            producer_id: t.producer_id.0,
            state: t.transaction_state.to_string(),
            coordinator: id,
        }));
    }
    listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    Ok(listed)
}

async fn describe(connection: &mut Connection, id: &str) -> Result<Described, String> {
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(id.into()))
        .with_key_type(1);
    let found = connection.call(3, &request).await?;
    if found.error_code != 0 {
        return Err(format!(
            "FindCoordinator for {id}: error {}",
            found.error_code
        ));
    }
    let mut home = (connection)
        .open_to(&format!("{}:{}", found.host, found.port))
        .await?;
    let ids = vec![TransactionalId(StrBytes::from_string(id.into()))];
    let request = DescribeTransactionsRequest::default().with_transactional_ids(ids);
    let answer = home.call(0, &request).await?;
    let state = (answer.transaction_states.into_iter().next())
        .ok_or("DescribeTransactions answered nothing")?;
    match state.error_code {
        0 => {}
        105 => return Err(format!("no transactional id {id}")),
        error => return Err(format!("DescribeTransactions for {id}: error {error}")),
    }
    let partitions = (state.topics.iter())
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
        .collect();
    Ok(Described {
        transactional_id: id.to_string(),
        coordinator: found.node_id.0,
        state: state.transaction_state.to_string(),
        producer_id: state.producer_id.0,
        producer_epoch: state.producer_epoch,
        timeout_ms: state.transaction_timeout_ms,
        start_time_ms: state.transaction_start_time_ms,
        partitions,
    })
}
