//! AlterConfigs and IncrementalAlterConfigs for topics: what `kafka-configs.sh --alter` and
//! AdminClient's `alter_configs` / `incremental_alter_configs` call. Each resource becomes the
//! topic's whole new set of overrides (incremental operations applied to the current set) and
//! is committed on shard 0 (`Shard::change_topic_configs`); the partitions take it at once.
//! Broker configs are read from the config file at start, so altering them is refused.

use super::wire::{code, text};
use crate::shard::{AlterConfigsError, Shard};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

/// Kafka's resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

/// One resource of a request: type, name, and the changes to its configs; `replace`: the
/// configs not named go (AlterConfigs), else they stay (IncrementalAlterConfigs).
struct Asked {
    resource_type: i8,
    name: String,
    changes: Result<Vec<(String, Option<String>)>, String>,
    replace: bool,
}

pub(super) async fn alter(shard: &Shard, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let asked = (request.resources.into_iter())
        .map(|r| Asked {
            resource_type: r.resource_type,
            name: r.resource_name.to_string(),
            changes: Ok((r.configs.into_iter())
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                .collect()),
            replace: true,
        })
        .collect();
    let mut response = AlterConfigsResponse::default();
    for (resource_type, name, outcome) in apply(shard, asked, request.validate_only).await {
        let (error_code, message) =
            outcome.map_or_else(|(c, m)| (c, Some(text(&m))), |()| (0, None));
        response.responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(text(&name))
                .with_error_code(error_code)
                .with_error_message(message),
        );
    }
    response
}

pub(super) async fn alter_incrementally(
    shard: &Shard,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let asked = (request.resources.into_iter())
        .map(|r| Asked {
            resource_type: r.resource_type,
            name: r.resource_name.to_string(),
            changes: (r.configs.into_iter())
                .map(|c| {
                    let name = c.name.to_string();
                    match (c.config_operation, c.value) {
                        (0, Some(value)) => Ok((name, Some(value.to_string()))),
                        (0, None) => Err(format!("{name}: SET needs a value")),
                        (1, _) => Ok((name, None)),
                        // APPEND and SUBTRACT are for list configs; Oxbow's topics have none
                        // that takes more than one value.
                        (op, _) => Err(format!("{name}: operation {op} is not supported")),
                    }
                })
                .collect(),
            replace: false,
        })
        .collect();
    let mut response = IncrementalAlterConfigsResponse::default();
    for (resource_type, name, outcome) in apply(shard, asked, request.validate_only).await {
        let (error_code, message) =
            outcome.map_or_else(|(c, m)| (c, Some(text(&m))), |()| (0, None));
        response.responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(text(&name))
                .with_error_code(error_code)
                .with_error_message(message),
        );
    }
    response
}

type Outcome = Result<(), (i16, String)>;

/// Applies every resource's changes on shard 0, one after another.
async fn apply(
    shard: &Shard,
    asked: Vec<Asked>,
    validate_only: bool,
) -> Vec<(i8, String, Outcome)> {
    shard
        .run_on(0, move |shard| async move {
            let mut answered = Vec::new();
            for one in asked {
                let outcome = alter_one(&shard, &one, validate_only).await;
                answered.push((one.resource_type, one.name, outcome));
            }
            answered
        })
        .await
        .unwrap_or_default()
}

async fn alter_one(shard: &Shard, asked: &Asked, validate_only: bool) -> Outcome {
    if asked.resource_type != TOPIC_RESOURCE {
        let why = "only topic configs can be altered; broker configs come from the config file";
        return Err((code::INVALID_REQUEST, why.into()));
    }
    let changes = (asked.changes.clone()).map_err(|why| (code::INVALID_CONFIG, why))?;
    let altered = shard.change_topic_configs(&asked.name, changes, asked.replace, validate_only);
    altered.await.map_err(|e| {
        let code = match &e {
            AlterConfigsError::UnknownTopic(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
            AlterConfigsError::InvalidConfig(_) => code::INVALID_CONFIG,
            AlterConfigsError::TimedOut(_) => code::REQUEST_TIMED_OUT,
        };
        (code, e.to_string())
    })
}
