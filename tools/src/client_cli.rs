//! The client commands: `oxbow topic|produce|consume|subscription`, over the native protocol.
//! Each runs on a small tokio runtime and reports a failure as one line (exit code 1).

use crate::output::{show, Output};
use clap::{Args, Subcommand};
use oxbow_client::config::{parse_acks, parse_kind, parse_mode, parse_start};
use oxbow_client::{Client, ClientError, Mode};
use serde::Serialize;
use std::io::{BufRead, Write};

mod broker;
pub use broker::{BrokerArg, BrokerConnection};

/// `oxbow topic ...`
#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partition count.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition (default: the broker's default_replication_factor).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        replication_factor: Option<u16>,
    },
    /// Grow a topic to more partitions (placed as a new topic's are).
    AddPartitions {
        /// Topic name.
        name: String,
        /// The partition count it gets.
        #[arg(long)]
        partitions: u32,
    },
    /// Change a topic's config overrides (Kafka names, e.g. retention.ms).
    AlterConfig {
        /// Topic name.
        name: String,
        /// NAME=VALUE to add or replace (repeatable).
        #[arg(long, value_parser = parse_config)]
        set: Vec<(String, String)>,
        /// NAME of an override to remove (repeatable).
        #[arg(long)]
        delete: Vec<String>,
    },
    /// List topics with their partition counts.
    List,
    /// Show each partition's offsets and the topic's subscriptions.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic, its data and its subscriptions.
    Delete {
        /// Topic name.
        name: String,
    },
}

/// `oxbow produce ...`: one message per line of standard input.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// Key of every message (same key, same partition).
    #[arg(long)]
    pub key: Option<String>,
    /// 0 (no answer), 1 (leader) or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Compress batches: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Compression level (gzip 1-9, lz4 1-17, zstd 1-22) [default: the codec's].
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// A header on every message, as NAME=VALUE (NAME alone: a null value); repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
}

/// `oxbow consume ...`: prints one payload per line; acknowledges after printing.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// Subscription name.
    #[arg(long)]
    pub subscription: String,
    /// exclusive, shared, failover or key_shared.
    #[arg(long = "type", default_value = "exclusive")]
    pub kind: String,
    /// reliable or non-reliable.
    #[arg(long, default_value = "reliable")]
    pub mode: String,
    /// Consumer name [default: unique to this run]; a consumer started again under the same
    /// name replaces its stale session (Exclusive, Failover).
    #[arg(long)]
    pub name: Option<String>,
    /// Failover priority (lower goes first).
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Where a new subscription starts: earliest, latest, offset:N or timestamp:MS.
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Print each message's headers before its value, as `NAME=VALUE,...<TAB>value` (a null
    /// value prints as NAME alone).
    #[arg(long)]
    pub print_headers: bool,
}

/// `oxbow subscription ...`
#[derive(Subcommand, Debug)]
pub enum SubscriptionCommand {
    /// List a topic's subscriptions, per partition.
    List {
        /// Topic.
        #[arg(long)]
        topic: String,
    },
    /// Move a subscription's cursor on every partition.
    Reset {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Subscription.
        #[arg(long)]
        subscription: String,
        /// earliest, latest, offset:N or timestamp:MS.
        #[arg(long, default_value = "earliest")]
        to: String,
    },
    /// Limit how fast a subscription delivers, per partition (kept with the subscription);
    /// without either flag the limit is lifted.
    SetRate {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Subscription.
        #[arg(long)]
        subscription: String,
        /// Messages per second (none: no message limit).
        #[arg(long)]
        messages_per_second: Option<u64>,
        /// Bytes of keys, values and headers per second (none: no byte limit).
        #[arg(long)]
        bytes_per_second: Option<u64>,
    },
    /// Delete a subscription (its consumers are detached).
    Delete {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Subscription.
        #[arg(long)]
        subscription: String,
    },
    /// Move subscriptions stopped in front of a batch they cannot decode past it (its
    /// messages are never delivered; the skip is kept in each subscription's cursor).
    Skip {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long)]
        partition: u32,
        /// Any offset of the batch (`subscription list` shows where each one is blocked).
        #[arg(long)]
        offset: u64,
        /// Only this subscription [default: every subscription stopped at that batch].
        #[arg(long)]
        subscription: Option<String>,
    },
}

/// Runs `work` on a current-thread runtime with a client connected to `broker`.
fn with_client<F, Fut>(broker: &BrokerConnection, work: F) -> Result<(), String>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let builder = broker.client_builder(|name| std::env::var(name).ok())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the client runtime: {e}"))?;
    let address = &broker.address;
    runtime.block_on(async {
        let client = builder
            .connect()
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        work(client).await.map_err(|e| e.to_string())
    })
}

/// `oxbow topic ...`
pub fn topic(
    broker: &BrokerConnection,
    output: Output,
    command: TopicCommand,
) -> Result<(), String> {
    with_client(broker, |client| async move {
        match command {
            TopicCommand::Create {
                name,
                partitions,
                replication_factor,
            } => {
                let replicas = replication_factor.unwrap_or(0);
                client
                    .create_replicated_topic(&name, partitions, replicas)
                    .await?;
                println!("created topic {name} with {partitions} partitions");
            }
            TopicCommand::AddPartitions { name, partitions } => {
                client.create_partitions(&name, partitions).await?;
                println!("topic {name} has {partitions} partitions");
            }
            TopicCommand::AlterConfig { name, set, delete } => {
                let set: Vec<(&str, &str)> = (set.iter())
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let delete: Vec<&str> = delete.iter().map(String::as_str).collect();
                client.alter_topic_configs(&name, &set, &delete).await?;
                println!("topic {name} configs altered");
            }
            TopicCommand::List => show(output, &client.list_topics().await?, print_topics),
            TopicCommand::Describe { name } => {
                let described = DescribedTopic {
                    partitions: client.describe_topic(&name).await?,
                    subscriptions: client.list_subscriptions(&name).await?,
                    topic: name,
                };
                show(output, &described, print_described);
            }
            TopicCommand::Delete { name } => {
                client.delete_topic(&name).await?;
                println!("deleted topic {name}");
            }
        }
        Ok(())
    })
}

/// A topic's partitions and subscriptions, as `topic describe` shows them.
#[derive(Serialize)]
struct DescribedTopic {
    topic: String,
    partitions: Vec<oxbow_client::PartitionInfo>,
    subscriptions: Vec<oxbow_client::SubscriptionInfo>,
}

fn print_topics(topics: &Vec<oxbow_client::TopicInfo>) {
    for topic in topics {
        println!("{}\t{} partitions", topic.name, topic.partitions);
    }
}

fn print_described(described: &DescribedTopic) {
    println!("partition\tlog_start\tlog_end");
    for p in &described.partitions {
        println!("{}\t{}\t{}", p.partition, p.log_start, p.log_end);
    }
    print_subscriptions(&described.subscriptions);
}

fn print_subscriptions(subscriptions: &Vec<oxbow_client::SubscriptionInfo>) {
    if subscriptions.is_empty() {
        return;
    }
    println!(
        "subscription\tpartition\ttype\tmode\tcursor\tpersisted\tlag\tunacked\tconsumers\tdropped\tblocked_at\tskipped\tredelivered\tdead_lettered\trate_msgs\trate_bytes"
    );
    let range = |(first, last): (u64, u64)| format!("{first}..={last}");
    let rate = |n: u64| {
        if n == 0 {
            "-".to_string()
        } else {
            n.to_string()
        }
    };
    for s in subscriptions {
        let blocked = s.blocked.map_or_else(|| "-".to_string(), range);
        let skipped = match s.skipped.is_empty() {
            true => "-".to_string(),
            false => s
                .skipped
                .iter()
                .map(|&r| range(r))
                .collect::<Vec<_>>()
                .join(","),
        };
        println!(
            "{}\t{}\t{:?}\t{:?}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            s.name,
            s.partition,
            s.kind,
            s.mode,
            s.cursor,
            s.persisted,
            s.lag,
            s.unacked,
            s.consumers,
            s.dropped,
            blocked,
            skipped,
            s.redelivered,
            s.dead_lettered,
            rate(s.rate_messages_per_second),
            rate(s.rate_bytes_per_second)
        );
    }
}

/// `oxbow produce ...`
pub fn produce(broker: &BrokerConnection, args: ProduceArgs) -> Result<(), String> {
    let acks = parse_acks(&args.acks).map_err(|e| e.to_string())?;
    let codec: oxbow_client::Codec = args
        .compression
        .parse()
        .map_err(|e| format!("--compression: {e}"))?;
    let headers: Vec<(&str, Option<&[u8]>)> = args
        .headers
        .iter()
        .map(|header| match header.split_once('=') {
            Some((name, value)) => (name, Some(value.as_bytes())),
            None => (header.as_str(), None),
        })
        .collect();
    with_client(broker, |client| async move {
        let producer = client
            .producer(&args.topic)
            .acks(acks)
            .compression(codec, args.compression_level)?
            .build()
            .await?;
        let key = args.key.as_deref().map(str::as_bytes);
        let mut pending = Vec::new();
        let mut sent = 0u64;
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| ClientError::Io(std::sync::Arc::new(e)))?;
            pending.push(
                producer
                    .send_with_headers(key, line.as_bytes(), &headers)
                    .await?,
            );
            sent += 1;
            // Collect answers as we go so memory stays bounded on long inputs.
            if pending.len() >= 10_000 {
                for outcome in pending.drain(..) {
                    outcome.await?;
                }
            }
        }
        producer.flush().await?;
        for outcome in pending {
            outcome.await?;
        }
        eprintln!("produced {sent} messages to {}", args.topic);
        Ok(())
    })
}

/// `oxbow consume ...`
pub fn consume(broker: &BrokerConnection, args: ConsumeArgs) -> Result<(), String> {
    let kind = parse_kind(&args.kind).map_err(|e| e.to_string())?;
    let mode = parse_mode(&args.mode).map_err(|e| e.to_string())?;
    let start = parse_start(&args.from).map_err(|e| e.to_string())?;
    with_client(broker, |client| async move {
        let mut builder = client
            .consumer(&args.topic, &args.subscription)
            .kind(kind)
            .mode(mode)
            .priority(args.priority)
            .start(start);
        if let Some(name) = &args.name {
            builder = builder.name(name);
        }
        let mut consumer = builder.build().await?;
        let mut stdout = std::io::stdout().lock();
        let mut printed = 0u64;
        while args.count.is_none_or(|count| printed < count) {
            let batch = match consumer.recv_batch(256).await {
                Ok(batch) => batch,
                Err(e @ ClientError::DeliveryBlocked { .. }) => {
                    // The other partitions go on; an operator's skip resumes this one.
                    eprintln!("{e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut done = Vec::with_capacity(batch.len());
            for message in batch {
                if args.count.is_some_and(|count| printed >= count) {
                    // Not printed, so not acknowledged: it comes again to the next consumer.
                    break;
                }
                if args.print_headers {
                    stdout
                        .write_all(&headers_line(&message))
                        .and_then(|()| stdout.write_all(b"\t"))
                        .map_err(|e| ClientError::Io(std::sync::Arc::new(e)))?;
                }
                stdout
                    .write_all(&message.value)
                    .and_then(|()| stdout.write_all(b"\n"))
                    .map_err(|e| ClientError::Io(std::sync::Arc::new(e)))?;
                printed += 1;
                done.push(message);
            }
            stdout
                .flush()
                .map_err(|e| ClientError::Io(std::sync::Arc::new(e)))?;
            if mode == Mode::Reliable {
                consumer.ack_all(&done)?;
            }
        }
        consumer.close().await
    })
}

/// A message's headers as `NAME=VALUE,...` (a null value prints as NAME alone).
fn headers_line(message: &oxbow_client::Message) -> Vec<u8> {
    let mut line = Vec::new();
    for (i, (name, value)) in message.headers.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        line.extend_from_slice(name);
        if let Some(value) = value {
            line.push(b'=');
            line.extend_from_slice(value);
        }
    }
    line
}

/// `oxbow subscription ...`
pub fn subscription(
    broker: &BrokerConnection,
    output: Output,
    command: SubscriptionCommand,
) -> Result<(), String> {
    with_client(broker, |client| async move {
        match command {
            SubscriptionCommand::List { topic } => {
                let subscriptions = client.list_subscriptions(&topic).await?;
                show(output, &subscriptions, print_subscriptions);
            }
            SubscriptionCommand::Reset {
                topic,
                subscription,
                to,
            } => {
                let position = parse_start(&to)?;
                client
                    .reset_subscription(&topic, &subscription, position)
                    .await?;
                println!("reset {subscription} on {topic} to {to}");
            }
            SubscriptionCommand::SetRate {
                topic,
                subscription,
                messages_per_second,
                bytes_per_second,
            } => {
                let (messages, bytes) = (
                    messages_per_second.unwrap_or(0),
                    bytes_per_second.unwrap_or(0),
                );
                client
                    .set_dispatch_rate(&topic, &subscription, messages, bytes)
                    .await?;
                let limit = |n: u64, unit: &str| match n {
                    0 => format!("no {unit} limit"),
                    n => format!("{n} {unit}/s"),
                };
                println!(
                    "{subscription} on {topic}: {}, {} per partition",
                    limit(messages, "message"),
                    limit(bytes, "byte")
                );
            }
            SubscriptionCommand::Delete {
                topic,
                subscription,
            } => {
                client.delete_subscription(&topic, &subscription).await?;
                println!("deleted subscription {subscription} on {topic}");
            }
            SubscriptionCommand::Skip {
                topic,
                partition,
                offset,
                subscription,
            } => {
                let (first, last, moved) = client
                    .skip_batch(&topic, partition, offset, subscription.as_deref())
                    .await?;
                println!(
                    "skipped offsets {first}..={last} of {topic}/{partition} for {}",
                    moved.join(", ")
                );
            }
        }
        Ok(())
    })
}

/// `NAME=VALUE` of `--set`.
fn parse_config(text: &str) -> Result<(String, String), String> {
    let (name, value) =
        (text.split_once('=')).ok_or_else(|| format!("{text:?}: expected NAME=VALUE"))?;
    Ok((name.to_string(), value.to_string()))
}
