//! The metric families kept per partition, topic or group: subscriptions, disk used, log end
//! and committed offsets, replication.

use super::MetricsSnapshot;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Disk used per topic: what retention keeps, and what fills the disk.
pub(super) fn render_log_bytes(out: &mut String, snapshots: &[MetricsSnapshot]) {
    let mut topics: BTreeMap<&str, u64> = BTreeMap::new();
    for snapshot in snapshots {
        for (topic, bytes) in &snapshot.log_bytes {
            *topics.entry(topic).or_default() += bytes;
        }
    }
    let name = "oxbow_log_bytes";
    let _ = writeln!(
        out,
        "# HELP {name} Bytes of log segments on this node, per topic.\n# TYPE {name} gauge"
    );
    for (topic, bytes) in topics {
        let _ = writeln!(out, "{name}{{topic=\"{topic}\"}} {bytes}");
    }
}

/// Log end offsets of the partitions this node leads, and the Kafka groups' committed offsets
/// its coordinators hold: a group's lag on a partition is the one minus the other, joined on
/// topic and partition (as kafka-exporter's `current_offset` pair is used).
pub(super) fn render_offsets(out: &mut String, snapshots: &[MetricsSnapshot]) {
    let name = "oxbow_partition_log_end_offset";
    let _ = writeln!(
        out,
        "# HELP {name} Offset after the last readable record of a partition this node leads.\n\
         # TYPE {name} gauge"
    );
    for (topic, partition, end) in snapshots.iter().flat_map(|s| &s.log_ends) {
        let _ = writeln!(
            out,
            "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {end}"
        );
    }
    let name = "oxbow_consumer_group_committed_offset";
    let _ = writeln!(
        out,
        "# HELP {name} Offset a Kafka consumer group committed for a partition.\n\
         # TYPE {name} gauge"
    );
    for (group, topic, partition, offset) in snapshots.iter().flat_map(|s| &s.committed) {
        let _ = writeln!(
            out,
            "{name}{{group=\"{}\",topic=\"{topic}\",partition=\"{partition}\"}} {offset}",
            escape_label(group)
        );
    }
}

/// A label value as the Prometheus text format needs it (group ids are any string).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The replicated partitions this node leads: in-sync replicas, under-replication, and each
/// follower's lag in offsets and time.
pub(super) fn render_replication(out: &mut String, snapshots: &[MetricsSnapshot]) {
    let led: Vec<_> = snapshots.iter().flat_map(|s| &s.replication).collect();
    let under = led.iter().filter(|p| p.isr < p.replicas).count();
    let _ = writeln!(
        out,
        "# HELP oxbow_under_replicated_partitions Partitions this node leads with fewer in-sync \
         replicas than replicas.\n# TYPE oxbow_under_replicated_partitions gauge\n\
         oxbow_under_replicated_partitions {under}"
    );
    let _ = writeln!(
        out,
        "# HELP oxbow_partition_isr In-sync replicas of a partition this node leads.\n\
         # TYPE oxbow_partition_isr gauge"
    );
    for p in &led {
        let _ = writeln!(
            out,
            "oxbow_partition_isr{{topic=\"{}\",partition=\"{}\"}} {}",
            p.topic, p.partition, p.isr
        );
    }
    let families: [(&str, &str); 2] = [
        (
            "oxbow_replica_lag_offsets",
            "Offsets a follower lacks of what its leader holds.",
        ),
        (
            "oxbow_replica_lag_seconds",
            "Time since a follower was last caught up with its leader.",
        ),
    ];
    for (i, (name, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for p in &led {
            for f in &p.followers {
                let value = match i {
                    0 => f.offsets as f64,
                    _ => f.ms as f64 / 1000.0,
                };
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{}\",replica=\"{}\"}} {value}",
                    p.topic, p.partition, f.replica
                );
            }
        }
    }
}

/// One gauge or counter per subscription and partition.
pub(super) fn render_subscriptions(out: &mut String, snapshots: &[MetricsSnapshot]) {
    type Field = fn(&oxbow_core::native::SubscriptionInfo) -> u64;
    let families: [(&str, &str, &str, Field); 8] = [
        (
            "oxbow_subscription_lag",
            "gauge",
            "Messages between a subscription's cursor and the log end.",
            |s| s.lag,
        ),
        (
            "oxbow_subscription_unacked",
            "gauge",
            "Messages delivered and not yet acknowledged.",
            |s| s.unacked,
        ),
        (
            "oxbow_subscription_consumers",
            "gauge",
            "Consumers attached to a subscription.",
            |s| s.consumers as u64,
        ),
        (
            "oxbow_subscription_dropped_total",
            "counter",
            "Messages a non-reliable subscription dropped because no consumer could take them.",
            |s| s.dropped,
        ),
        (
            "oxbow_subscription_redelivered_total",
            "counter",
            "Messages a reliable subscription delivered again (nacked, or not acknowledged in \
             time) since its partition opened on this broker.",
            |s| s.redelivered,
        ),
        (
            "oxbow_subscription_dead_lettered_total",
            "counter",
            "Messages a reliable subscription sent to its dead-letter topic since its partition \
             opened on this broker.",
            |s| s.dead_lettered,
        ),
        (
            "oxbow_subscription_blocked",
            "gauge",
            "1 while a reliable subscription is stopped in front of a batch it cannot decode \
             (oxbow subscription skip moves it on).",
            |s| s.blocked.is_some() as u64,
        ),
        (
            "oxbow_subscription_skipped_batches",
            "gauge",
            "Undecodable batches an operator skipped on a subscription (the last 64 are kept).",
            |s| s.skipped.len() as u64,
        ),
    ];
    for (name, kind, help, field) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for info in snapshots.iter().flat_map(|s| &s.subscriptions) {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{}\",subscription=\"{}\",mode=\"{:?}\"}} {}",
                info.topic,
                info.partition,
                info.name,
                info.mode,
                field(info)
            );
        }
    }
}
