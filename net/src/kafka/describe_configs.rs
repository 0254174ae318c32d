//! DescribeConfigs: a topic's effective settings (each marked overridden or the broker's
//! default) and the broker's own, in Kafka's names, read-only.

use super::wire::{code, text};
use crate::shard::Shard;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use oxbow_core::config::{MIN_INSYNC_REPLICAS_CONFIG, UNCLEAN_ELECTION_CONFIG};

/// Kafka's resource types and config source used here.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;

/// A topic's effective log and replication settings in Kafka's names, each marked whether the
/// topic overrides it.
fn topic_configs(shard: &Shard, topic: &str) -> Result<Vec<(&'static str, String, bool)>, String> {
    let log = shard.topic_log_config(topic)?;
    let overrides = shard.topic_overrides(topic)?;
    let optional = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    let flush_ms = match log.flush {
        oxbow_core::FlushPolicy::Always => "0".to_string(),
        oxbow_core::FlushPolicy::Interval => log.flush_interval_ms.to_string(),
        oxbow_core::FlushPolicy::Never => i64::MAX.to_string(),
    };
    let pairs = overrides.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let min_insync = (oxbow_core::config::min_insync_replicas_override(pairs))
        .unwrap_or(shard.config.cluster.min_insync_replicas);
    let unclean = (overrides.get(UNCLEAN_ELECTION_CONFIG)).is_some_and(|v| v == "true");
    let flush = match log.flush {
        oxbow_core::FlushPolicy::Always => "always",
        oxbow_core::FlushPolicy::Interval => "interval",
        oxbow_core::FlushPolicy::Never => "never",
    };
    let values = [
        ("cleanup.policy", log.cleanup_policy.name().to_string()),
        ("delete.retention.ms", log.delete_retention_ms.to_string()),
        (
            "min.cleanable.dirty.ratio",
            log.min_cleanable_dirty_ratio.get().to_string(),
        ),
        (
            "min.compaction.lag.ms",
            log.min_compaction_lag_ms.to_string(),
        ),
        (
            "max.compaction.lag.ms",
            log.max_compaction_lag_ms
                .map_or(i64::MAX as u64, |ms| ms)
                .to_string(),
        ),
        ("segment.bytes", log.segment_bytes_max.to_string()),
        ("segment.ms", log.segment_age_max_ms.to_string()),
        ("retention.bytes", optional(log.retention_bytes_max)),
        ("retention.ms", optional(log.retention_age_max_ms)),
        ("max.message.bytes", log.batch_bytes_max.to_string()),
        ("flush.ms", flush_ms),
        ("oxbow.flush", flush.to_string()),
        (MIN_INSYNC_REPLICAS_CONFIG, min_insync.to_string()),
        (UNCLEAN_ELECTION_CONFIG, unclean.to_string()),
    ];
    Ok(values
        .into_iter()
        .map(|(name, value)| (name, value, overrides.contains_key(name)))
        .collect())
}

fn broker_configs(shard: &Shard) -> Vec<(&'static str, String, bool)> {
    let config = &shard.config;
    let values = [
        ("broker.id", config.node_id.to_string()),
        ("num.partitions", config.default_partitions.to_string()),
        (
            "default.replication.factor",
            config.default_replication_factor.to_string(),
        ),
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
        ),
        (
            "socket.request.max.bytes",
            config.kafka_frame_bytes_max.to_string(),
        ),
    ];
    values
        .into_iter()
        .map(|(name, value)| (name, value, false))
        .collect()
}

pub(super) fn describe_configs(
    shard: &Shard,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let configs = match resource.resource_type {
            RESOURCE_TOPIC if shard.partition_count(&resource.resource_name).is_some() => {
                topic_configs(shard, &resource.resource_name).map_err(|e| {
                    tracing::error!(error = %e, "reading topic config");
                    code::KAFKA_STORAGE_ERROR
                })
            }
            RESOURCE_TOPIC => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
            RESOURCE_BROKER => Ok(broker_configs(shard)),
            _ => Err(code::INVALID_REQUEST),
        };
        match configs {
            Ok(configs) => {
                let wanted = resource.configuration_keys.as_ref();
                for (name, value, overridden) in configs {
                    if wanted.is_some_and(|keys| !keys.iter().any(|k| k.as_str() == name)) {
                        continue;
                    }
                    let mut entry = DescribeConfigsResourceResult::default();
                    entry.name = text(name);
                    entry.value = Some(text(&value));
                    entry.read_only = true;
                    entry.config_source = match overridden {
                        true => SOURCE_TOPIC_CONFIG,
                        false => SOURCE_STATIC_BROKER_CONFIG,
                    };
                    result.configs.push(entry);
                }
            }
            Err(code) => result.error_code = code,
        }
        response.results.push(result);
    }
    response
}
