//! `oxbow`: the broker (`oxbow serve`) and its operator commands.

mod access;
mod acl_cli;
mod balance;
mod bench;
mod client_cli;
mod cluster_cli;
mod generate;
mod group_cli;
mod output;
mod reassign;
mod serve;
mod systemd;
mod torture;
mod transaction_cli;
mod user_cli;

/// Kafka request decoding may ask for absurd capacities; see `oxbow_net::alloc`.
#[global_allocator]
static ALLOCATOR: oxbow_net::alloc::ReservingAllocator = oxbow_net::alloc::ReservingAllocator;
mod verify;

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "oxbow",
    version,
    about = "A thread-per-core, storage-centric message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Every setting of the TOML file given to `--config` (all optional).
const CONFIG_FILE_HELP: &str = "\
Config file keys (TOML; every one optional, flags override them):
  data_dir, shards, shard_io_memory_bytes, pin_shards, retention_check_interval_ms, node_id, rack,
  kafka_listen, advertised_kafka_addr, metrics_listen, kafka_frame_bytes_max,
  kafka_connections_max, kafka_idle_timeout_ms, kafka_request_timeout_ms,
  kafka_produce_in_flight_max, auto_create_topics, default_partitions,
  default_replication_factor, topic_partitions_max, native_listen, advertised_native_addr, native_connections_max,
  native_frame_bytes_max, native_session_timeout_ms,
  native_produce_in_flight_max, native_outbound_bytes_max, native_write_stall_ms,
  batch_decompressed_bytes_max, log_format = \"text\" | \"json\"
  [[kafka_listeners]], [[native_listeners]] name, address, advertised_address,
        security = \"PLAINTEXT\" | \"SSL\" | \"SASL_PLAINTEXT\" | \"SASL_SSL\", tls_cert_file,
        tls_key_file, tls_client_ca_file, sasl_mechanisms (each replaces the _listen shorthand)
  [metrics_listener] the same keys, security = \"PLAINTEXT\" | \"SSL\" (replaces metrics_listen)
  [authentication] timeout_ms, unauthenticated_frame_bytes_max, failure_delay_ms,
        failures_per_address_max, failure_window_ms, password_checks_per_second_max,
        tls_handshakes_per_second_max
  [authorizer] enabled, super_users, allow_everyone_if_no_acl_found
  [log] segment_bytes_max, segment_age_max_ms, index_interval_bytes,
        flush = \"always\" | \"interval\" | \"never\", flush_interval_ms,
        retention_bytes_max, retention_age_max_ms, tail_cache_bytes_max,
        batch_bytes_max, write_buffer_bytes, append_queue_bytes_max,
        cleanup_policy = \"delete\" | \"compact\" | \"compact,delete\", delete_retention_ms,
        min_cleanable_dirty_ratio, min_compaction_lag_ms, max_compaction_lag_ms
  [compaction] check_interval_ms, key_map_bytes_max, io_bytes_per_sec
  [read_cache] bytes_max, block_bytes, read_ahead_blocks, cache_writes
  [subscriptions] unacked_messages_max, ack_timeout_ms, redeliveries_max,
        cursor_persist_interval_ms, cursor_replication_timeout_ms, read_ahead_messages_max,
        read_bytes_max, permits_per_flow_max, acks_per_frame_max, nack_delay_max_ms, consumers_max,
        decoded_cache_bytes_max
  offset_metadata_bytes_max, offsets_topic_partitions, offsets_topic_replication_factor,
        offsets_commit_timeout_ms
  [consumer_groups] session_timeout_ms, heartbeat_interval_ms, members_max,
        subscription_regex_bytes_max, subscription_topics_max
  [state_logs] segment_bytes_max, compaction_bytes_min
  [metadata] tick_ms, election_ticks, heartbeat_ticks, snapshot_entries,
        segment_bytes_max, proposal_timeout_ms
  [cluster] listen, initial_voters = [\"id@ip:port\", ...] | join = \"id@ip:port\",
        tls_dir, frame_bytes_max, connect_timeout_ms, frame_timeout_ms, idle_timeout_ms,
        broker_session_timeout_ms, replica_lag_time_max_ms, min_insync_replicas,
        replica_fetch_timeout_ms, replica_fetch_wait_max_ms, replica_fetch_backoff_ms,
        replica_fetch_bytes_max, socket_buffer_bytes, controlled_shutdown_timeout_ms,
        auto_leader_rebalance, leader_imbalance_check_interval_ms,
        leader_imbalance_per_broker_percentage, catch_up_bytes_per_sec
Topics override segment.bytes, segment.ms, retention.bytes, retention.ms,
max.message.bytes, flush.ms, oxbow.flush, min.insync.replicas,
unclean.leader.election.enable, cleanup.policy (delete, compact or both),
delete.retention.ms, min.cleanable.dirty.ratio, min.compaction.lag.ms and
max.compaction.lag.ms through CreateTopics configs, and later through
AlterConfigs / IncrementalAlterConfigs.";

#[derive(Subcommand)]
enum Command {
    /// Run the broker. Settings: embedded defaults, then --config, then these flags.
    #[command(after_help = CONFIG_FILE_HELP)]
    Serve(ServeArgs),
    /// Operate on a data directory directly (with the broker stopped).
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Create, list, describe and delete topics.
    Topic {
        #[command(flatten)]
        broker: client_cli::BrokerArg,
        /// How `list` and `describe` print.
        #[arg(long, value_enum, default_value = "text", global = true)]
        output: output::Output,
        #[command(subcommand)]
        command: client_cli::TopicCommand,
    },
    /// Produce one message per line of standard input.
    Produce {
        #[command(flatten)]
        broker: client_cli::BrokerArg,
        #[command(flatten)]
        args: client_cli::ProduceArgs,
    },
    /// Consume a subscription, printing one payload per line (acknowledged after printing).
    Consume {
        #[command(flatten)]
        broker: client_cli::BrokerArg,
        #[command(flatten)]
        args: client_cli::ConsumeArgs,
    },
    /// List, reset and delete subscriptions.
    Subscription {
        #[command(flatten)]
        broker: client_cli::BrokerArg,
        /// How `list` prints.
        #[arg(long, value_enum, default_value = "text", global = true)]
        output: output::Output,
        #[command(subcommand)]
        command: client_cli::SubscriptionCommand,
    },
    /// Describe the cluster, decommission or remove a node, through any node's Kafka listener.
    Cluster {
        /// Kafka address of any node.
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        bootstrap: String,
        #[command(flatten)]
        security: access::SecurityArgs,
        #[command(subcommand)]
        command: cluster_cli::ClusterCommand,
    },
    /// Kafka consumer groups: list, describe with lag, delete.
    Group {
        /// Kafka address of any node.
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        bootstrap: String,
        /// How results are printed.
        #[arg(long, value_enum, default_value = "text", global = true)]
        output: output::Output,
        #[command(flatten)]
        security: access::SecurityArgs,
        #[command(subcommand)]
        command: group_cli::GroupCommand,
    },
    /// Kafka transactions: list the transactional ids, describe one.
    Transaction {
        /// Kafka address of any node.
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        bootstrap: String,
        /// How results are printed.
        #[arg(long, value_enum, default_value = "text", global = true)]
        output: output::Output,
        #[command(flatten)]
        security: access::SecurityArgs,
        #[command(subcommand)]
        command: transaction_cli::TransactionCommand,
    },
    /// Move partitions between brokers or delete their oldest records, through any node's Kafka
    /// listener.
    Partition {
        /// Kafka address of any node.
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        bootstrap: String,
        #[command(flatten)]
        security: access::SecurityArgs,
        #[command(subcommand)]
        command: cluster_cli::PartitionCommand,
    },
    /// Kafka ACLs: add, remove, list.
    Acl {
        /// Kafka address of a running broker.
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        broker: String,
        #[command(flatten)]
        security: access::SecurityArgs,
        /// How `list` prints.
        #[arg(long, value_enum, default_value = "text", global = true)]
        output: output::Output,
        #[command(subcommand)]
        command: acl_cli::AclCommand,
    },
    /// SASL/SCRAM users: create, delete, list.
    User {
        #[command(flatten)]
        target: user_cli::UserTarget,
        #[command(flatten)]
        security: access::SecurityArgs,
        /// How `list` prints.
        #[arg(long, value_enum, default_value = "text", global = true)]
        output: output::Output,
        #[command(subcommand)]
        command: user_cli::UserCommand,
    },
    /// Load a broker and measure throughput and latency (publish and end to end).
    Bench(Box<bench::plan::BenchArgs>),
    /// Shell completions and man pages, made from these commands' definitions.
    #[command(subcommand)]
    Generate(generate::GenerateCommand),
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Read every frame of every partition; report damaged offsets. Exit 1 if any are.
    Verify {
        /// Data directory to check.
        #[arg(long, default_value = "oxbow-data")]
        data_dir: PathBuf,
    },
    /// Drive the storage engine through random appends, truncations, retention and crashes
    /// (simulated power losses and real SIGKILLs) for a set time, checking every recovery.
    /// Exit 1 on the first violation.
    Torture(torture::TortureArgs),
    /// The writer process `torture` kills.
    #[command(hide = true)]
    TortureWriter(torture::WriterArgs),
}

/// Flags of `oxbow serve`; each overrides the same setting of the config file.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file (optional; every setting has a default).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory: `<data-dir>/<topic>/<partition>/` [default: ./oxbow-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of shards, one pinned executor each [default: one per available core]
    #[arg(long)]
    pub shards: Option<usize>,
    /// Kafka protocol listen address; port 0 picks a free port [default: 127.0.0.1:9092]
    #[arg(long)]
    pub kafka_listen: Option<String>,
    /// Prometheus endpoint address (`GET /metrics`) [default: 127.0.0.1:9644]
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// `host:port` Kafka clients are told to connect to [default: the listen address]
    #[arg(long)]
    pub advertised_kafka_addr: Option<String>,
    /// Native protocol listen address; port 0 picks a free port [default: 127.0.0.1:6650]
    #[arg(long)]
    pub native_listen: Option<String>,
    /// `host:port` native clients are told to connect to [default: the listen address]
    #[arg(long)]
    pub advertised_native_addr: Option<String>,
    /// This broker's id (Kafka's `node.id`) [default: 0]
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Cluster transport address (QUIC over UDP), to run with other nodes
    #[arg(long)]
    pub cluster_listen: Option<String>,
    /// Join a running cluster through this member, `id@ip:port` of its cluster listener (in
    /// place of --initial-voters); the node becomes a learner of the metadata group
    #[arg(long)]
    pub join: Option<String>,
    /// The metadata group's first voters, `id@ip:port` of their cluster listeners, comma
    /// separated (this node among them); read when the group is formed
    #[arg(long, value_delimiter = ',')]
    pub initial_voters: Option<Vec<String>>,
}

/// Starts logging to standard error in `format` (the broker's `log_format`; text for the
/// other commands).
pub fn init_logging(format: oxbow_core::config::LogFormat) {
    // RUST_LOG takes `level` or `target=level,...`; no regex engine needed for that.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing::Level::INFO)
                // glommio logs its own io-poll probe failure at error level; it is expected.
                .with_target("glommio", tracing::Level::WARN)
        });
    use tracing_subscriber::prelude::*;
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        oxbow_core::config::LogFormat::Text => registry
            .with(layer.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init(),
        oxbow_core::config::LogFormat::Json => registry.with(layer.json()).init(),
    }
}

/// A client command's outcome: failures print one line and exit 1.
fn client_command(result: Result<(), String>) -> Result<ExitCode, String> {
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxbow: {e}");
            ExitCode::FAILURE
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The broker logs once its configuration (and so its log format) is read. Under torture
    // the storage engine logs every crash it recovers from: only with RUST_LOG set.
    let torture = matches!(cli.command, Command::Storage(StorageCommand::Torture(_)));
    let quiet = torture && std::env::var_os("RUST_LOG").is_none();
    if !matches!(cli.command, Command::Serve(_)) && !quiet {
        init_logging(oxbow_core::config::LogFormat::Text);
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::Storage(StorageCommand::Verify { data_dir }) => verify::run(data_dir).map(|s| {
            println!(
                "verified {} partitions, {} segments, {} batches: {} damaged ranges",
                s.partitions, s.segments, s.batches, s.damaged_ranges
            );
            match s.damaged_ranges {
                0 => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }),
        Command::Storage(StorageCommand::Torture(args)) => torture::run(args),
        Command::Storage(StorageCommand::TortureWriter(args)) => torture::writer(args),
        Command::Topic {
            broker,
            output,
            command,
        } => client_command(client_cli::topic(&broker.broker, output, command)),
        Command::Produce { broker, args } => {
            client_command(client_cli::produce(&broker.broker, args))
        }
        Command::Consume { broker, args } => {
            client_command(client_cli::consume(&broker.broker, args))
        }
        Command::Subscription {
            broker,
            output,
            command,
        } => client_command(client_cli::subscription(&broker.broker, output, command)),
        Command::Cluster {
            bootstrap,
            security,
            command,
        } => client_command(
            (security.kafka_access()).and_then(|a| cluster_cli::run(&bootstrap, &a, command)),
        ),
        Command::Group {
            bootstrap,
            output,
            security,
            command,
        } => client_command(
            (security.kafka_access()).and_then(|a| group_cli::run(&bootstrap, &a, output, command)),
        ),
        Command::Transaction {
            bootstrap,
            output,
            security,
            command,
        } => client_command(
            (security.kafka_access())
                .and_then(|a| transaction_cli::run(&bootstrap, &a, output, command)),
        ),
        Command::Partition {
            bootstrap,
            security,
            command,
        } => client_command(
            (security.kafka_access())
                .and_then(|a| cluster_cli::run_partition(&bootstrap, &a, command)),
        ),
        Command::Acl {
            broker,
            output,
            security,
            command,
        } => client_command(
            (security.kafka_access()).and_then(|a| acl_cli::run(&broker, &a, output, command)),
        ),
        Command::User {
            target,
            output,
            security,
            command,
        } => client_command(
            (security.kafka_access()).and_then(|a| user_cli::run(target, &a, output, command)),
        ),
        Command::Bench(args) => client_command(bench::run(*args)),
        Command::Generate(command) => {
            generate::run(command, Cli::command()).map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("oxbow: {e}");
        ExitCode::from(2)
    })
}
