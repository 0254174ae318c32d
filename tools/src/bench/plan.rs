//! `oxbow bench` flags, and their validation into a [`Plan`] before anything starts.

use super::tls::Tls;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Which wire protocol the load goes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Kafka wire protocol (Produce / Fetch), static partition assignment.
    Kafka,
    /// Oxbow's native protocol; consumers share one subscription.
    Native,
    /// NATS JetStream, the peer broker of `benches/side_by_side.sh` (`nats` feature builds).
    #[cfg(feature = "nats")]
    Nats,
}

/// What the run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Producers only; publish latency.
    Produce,
    /// Consumers only, of an existing topic (`--from earliest` or tailing another producer).
    Consume,
    /// Producers and consumers; publish and end-to-end latency.
    ProduceConsume,
}

/// What the bytes of each message are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// Random bytes (incompressible), the same for every message of a producer.
    Random,
    /// Words drawn at random from a small vocabulary, different for every message: about as
    /// compressible as logs or JSON (lz4 ~2x, zstd ~3x).
    Text,
}

/// `oxbow bench ...`
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Broker address [default: 127.0.0.1:9092 for kafka, 127.0.0.1:6650 for native,
    /// 127.0.0.1:4222 for nats]
    #[arg(long)]
    pub broker: Option<String>,
    /// Wire protocol.
    #[arg(long, value_enum, default_value = "native")]
    pub protocol: Protocol,
    /// Connect over TLS, trusting the CA certificates in this PEM file (kafka protocol).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The name the broker's certificate must carry [default: the host of --broker].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// produce, consume or produce-consume.
    #[arg(long, value_enum, default_value = "produce-consume")]
    pub workload: Workload,
    /// Bytes per message (at least 16: a marker and the send time travel in the first 16).
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Partitions of the topic the bench creates.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Producer connections, each on its own thread.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer connections, each on its own thread.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Target msg/s over all producers (fixed-rate open loop, latency corrected for
    /// coordinated omission), or `max` (closed loop: as fast as acks come back).
    #[arg(long, default_value = "max")]
    pub rate: String,
    /// Under a fixed rate, time latency from each message's slot in the schedule (true: a
    /// stall shows in every message it held back), or from when the client got to send it
    /// (false: the measure that hides stalls, for comparison).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub correct_omission: bool,
    /// How long to measure, after the warm-up (e.g. 30s, 500ms, 2m).
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// Stop after this many messages per producer instead (still bounded by --duration).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Load before measuring starts; not counted in any figure.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// 0 (no answer), 1 (leader) or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// Largest batch a producer sends, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub batch_bytes: usize,
    /// How long a producer's batch waits for more messages (0: send as soon as the
    /// messages at hand are batched).
    #[arg(long, default_value = "1ms")]
    pub linger: String,
    /// Batches a producer has in flight before it waits for an answer.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Native producers: idempotent (producer id and sequences; at most 16 batches in flight
    /// per partition), true or false [default: true with --acks all].
    #[arg(long)]
    pub idempotence: Option<bool>,
    /// Compression of produced batches: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Compression level (gzip 1-9, lz4 1-17, zstd 1-22) [default: the codec's].
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// Message bytes: random (incompressible) or text (compressible, varied per message).
    #[arg(long, value_enum, default_value = "random")]
    pub payload: PayloadKind,
    /// Topic name [default: oxbow-bench-<pid>, created and deleted by the run].
    #[arg(long)]
    pub topic: Option<String>,
    /// Keep the topic the run created (a topic named with --topic is reused if it exists and
    /// never deleted).
    #[arg(long)]
    pub keep_topic: bool,
    /// Where consumers start: earliest or latest.
    #[arg(long, default_value = "latest")]
    pub from: String,
    /// Native subscription type: exclusive, shared, failover or key_shared.
    #[arg(long = "subscription-type", default_value = "shared")]
    pub subscription_type: String,
    /// Native subscription mode: reliable or non-reliable.
    #[arg(long, default_value = "reliable")]
    pub mode: String,
    /// Native consumer tier: stream (a message per wake-up), buffered:N (vectors of up to N)
    /// or dedicated (its own thread and connection feeding a channel).
    #[arg(long, default_value = "buffered:1024")]
    pub tier: String,
    /// After the producers stop, how long consumers may stay idle before the run ends.
    #[arg(long, default_value = "5s")]
    pub drain_timeout: String,
    /// Write every figure, the configuration and the machine as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the per-second latency histograms as an HdrHistogram interval log.
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Write a latency-by-percentile plot (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No per-second progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Run the same benchmark N times (each on a topic of its own, unless --topic names one)
    /// and report the median and spread of every figure; --json then holds every run and the
    /// summary.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
}

/// The flag value of a `ValueEnum`, for reports.
pub fn flag_name(value: &impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// The send rate.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rate {
    /// Closed loop.
    Max,
    /// Open loop at this many messages per second over all producers.
    Fixed(f64),
}

/// A validated run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plan {
    pub broker: String,
    pub protocol: Protocol,
    /// TLS settings (`--tls-ca`); none for plaintext.
    pub tls: Option<Tls>,
    pub workload: Workload,
    pub message_size: usize,
    pub partitions: u32,
    pub producers: usize,
    pub consumers: usize,
    pub rate: Rate,
    pub correct_omission: bool,
    #[serde(serialize_with = "as_seconds")]
    pub duration: Duration,
    pub messages_per_producer: Option<u64>,
    #[serde(serialize_with = "as_seconds")]
    pub warmup: Duration,
    pub acks: String,
    pub batch_bytes: usize,
    #[serde(serialize_with = "as_seconds")]
    pub linger: Duration,
    pub in_flight: usize,
    pub idempotence: Option<bool>,
    pub compression: String,
    pub compression_level: Option<i32>,
    #[serde(skip)]
    pub codec: oxbow_core::Codec,
    pub payload: PayloadKind,
    pub topic: String,
    pub create_topic: bool,
    pub delete_topic: bool,
    pub from_earliest: bool,
    pub subscription_type: String,
    pub mode: String,
    pub tier: String,
    #[serde(serialize_with = "as_seconds")]
    pub drain_timeout: Duration,
    #[serde(skip)]
    pub quiet: bool,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Bytes at the start of every bench payload: a marker, then the send time.
pub const STAMP_BYTES: usize = 16;
/// Caps that keep a typo from taking the machine down; far above what one host can drive.
const CONNECTIONS_MAX: usize = 1024;
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
const REPEAT_MAX: usize = 100;

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("--{flag} {text:?}: {e} (examples: 30s, 500ms, 2m)"))
}

impl BenchArgs {
    /// Checks every flag; a bad one is an error naming it, before any connection is made.
    pub fn plan(&self) -> Result<Plan, String> {
        let rate = match self.rate.trim() {
            "max" => Rate::Max,
            text => match text.parse::<f64>() {
                Ok(r) if r.is_finite() && r > 0.0 => Rate::Fixed(r),
                _ => {
                    return Err(format!(
                        "--rate {text:?}: give messages per second above zero, or max"
                    ))
                }
            },
        };
        if rate == Rate::Max && !self.correct_omission {
            return Err(
                "--correct-omission false needs a fixed --rate: a closed loop has no \
                        schedule to correct against"
                    .into(),
            );
        }
        if self.partitions == 0 {
            return Err("--partitions must be at least 1".into());
        }
        if !(1..=REPEAT_MAX).contains(&self.repeat) {
            return Err(format!("--repeat must be between 1 and {REPEAT_MAX}"));
        }
        if self.repeat > 1 && (self.hdr_log.is_some() || self.plot.is_some()) {
            return Err("--hdr-log and --plot describe one run: leave out --repeat".into());
        }
        if !(STAMP_BYTES..=MESSAGE_BYTES_MAX).contains(&self.message_size) {
            return Err(format!(
                "--message-size must be between {STAMP_BYTES} and {MESSAGE_BYTES_MAX} bytes"
            ));
        }
        let produces = self.workload != Workload::Consume;
        let consumes = self.workload != Workload::Produce;
        if produces && !(1..=CONNECTIONS_MAX).contains(&self.producers) {
            return Err(format!(
                "--producers must be between 1 and {CONNECTIONS_MAX}"
            ));
        }
        if consumes && !(1..=CONNECTIONS_MAX).contains(&self.consumers) {
            return Err(format!(
                "--consumers must be between 1 and {CONNECTIONS_MAX}"
            ));
        }
        if self.batch_bytes < self.message_size {
            return Err("--batch-bytes must hold at least one message (>= --message-size)".into());
        }
        if self.in_flight == 0 {
            return Err("--in-flight must be at least 1".into());
        }
        let codec: oxbow_core::Codec = self
            .compression
            .parse()
            .map_err(|e| format!("--compression: {e}"))?;
        codec
            .check_level(self.compression_level)
            .map_err(|e| format!("--compression-level: {e}"))?;
        #[cfg(feature = "nats")]
        if self.protocol == Protocol::Nats && codec != oxbow_core::Codec::None {
            return Err("--compression is for the kafka and native protocols".into());
        }
        if !matches!(self.acks.as_str(), "0" | "1" | "all" | "-1") {
            return Err(format!("--acks {:?}: use 0, 1 or all", self.acks));
        }
        let from_earliest = match self.from.as_str() {
            "earliest" => true,
            "latest" => false,
            other => return Err(format!("--from {other:?}: use earliest or latest")),
        };
        oxbow_client::config::parse_kind(&self.subscription_type).map_err(|e| e.to_string())?;
        oxbow_client::config::parse_mode(&self.mode).map_err(|e| e.to_string())?;
        self.tier
            .parse::<oxbow_client::Tier>()
            .map_err(|e| e.to_string())?;
        let measured = duration("duration", &self.duration)?;
        if measured.is_zero() {
            return Err("--duration must be above zero".into());
        }
        if self.messages == Some(0) {
            return Err("--messages must be at least 1".into());
        }
        let named = self.topic.is_some();
        if self.workload == Workload::Consume && !named {
            return Err("--workload consume reads an existing topic: name it with --topic".into());
        }
        let topic = self
            .topic
            .clone()
            .unwrap_or_else(|| format!("oxbow-bench-{}", std::process::id()));
        let broker = self.broker.clone().unwrap_or_else(|| {
            match self.protocol {
                Protocol::Kafka => "127.0.0.1:9092",
                Protocol::Native => "127.0.0.1:6650",
                #[cfg(feature = "nats")]
                Protocol::Nats => "127.0.0.1:4222",
            }
            .to_string()
        });
        let tls = match (&self.tls_ca, &self.tls_server_name) {
            (None, None) => None,
            (None, Some(_)) => return Err("--tls-server-name goes with --tls-ca".into()),
            (Some(_), _) if self.protocol != Protocol::Kafka => {
                return Err("--tls-ca is for --protocol kafka".into())
            }
            (Some(ca), name) => Some(Tls::load(ca, name.as_deref())?),
        };
        Ok(Plan {
            broker,
            protocol: self.protocol,
            tls,
            workload: self.workload,
            message_size: self.message_size,
            partitions: self.partitions,
            producers: if produces { self.producers } else { 0 },
            consumers: if consumes { self.consumers } else { 0 },
            rate,
            correct_omission: self.correct_omission,
            duration: measured,
            messages_per_producer: self.messages,
            warmup: duration("warmup", &self.warmup)?,
            acks: if self.acks == "-1" {
                "all".into()
            } else {
                self.acks.clone()
            },
            batch_bytes: self.batch_bytes,
            linger: duration("linger", &self.linger)?,
            in_flight: self.in_flight,
            idempotence: self.idempotence,
            compression: codec.name().to_string(),
            compression_level: self.compression_level,
            codec,
            payload: self.payload,
            topic,
            create_topic: self.workload != Workload::Consume,
            delete_topic: !named && !self.keep_topic,
            from_earliest,
            subscription_type: self.subscription_type.clone(),
            tier: self.tier.clone(),
            mode: self.mode.clone(),
            drain_timeout: duration("drain-timeout", &self.drain_timeout)?,
            quiet: self.quiet,
        })
    }
}

impl Plan {
    /// Messages per second each producer sends, under a fixed rate.
    pub fn producer_rate(&self) -> Option<f64> {
        match self.rate {
            Rate::Max => None,
            Rate::Fixed(total) => Some(total / self.producers.max(1) as f64),
        }
    }
}
