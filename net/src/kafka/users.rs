//! AlterUserScramCredentials and DescribeUserScramCredentials: how Kafka's admin tools
//! (`kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[...]' --entity-type users`,
//! AdminClient's `alterUserScramCredentials`) and `oxbow user` manage SASL/SCRAM users. A
//! client sends the salted password, never the password; the keys derived from it are
//! committed to the metadata on shard 0, so every node of a cluster accepts the user.

use super::wire::{code, text};
use crate::shard::Shard;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use oxbow_cluster::{MetadataChange, USER_NAME_BYTES_MAX};
use oxbow_core::auth::{validate_iterations, Mechanism, ScramCredential};
use std::collections::BTreeMap;

/// Kafka's number of a SCRAM mechanism (its `ScramMechanism` type).
pub fn mechanism_number(mechanism: Mechanism) -> i8 {
    match mechanism {
        Mechanism::ScramSha256 => 1,
        Mechanism::ScramSha512 => 2,
    }
}

fn mechanism_of(number: i8) -> Result<Mechanism, (i16, String)> {
    match number {
        1 => Ok(Mechanism::ScramSha256),
        2 => Ok(Mechanism::ScramSha512),
        other => Err((
            code::UNSUPPORTED_SASL_MECHANISM,
            format!("unknown SCRAM mechanism {other}"),
        )),
    }
}

/// What one user's part of the request asks, checked as far as it can be before committing.
type Asked = (String, Result<Vec<MetadataChange>, (i16, String)>);

pub(super) async fn alter(
    shard: &Shard,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut by_user: BTreeMap<String, Result<Vec<MetadataChange>, (i16, String)>> = BTreeMap::new();
    // A credential (user and mechanism) named twice refuses that user's whole part (Kafka's
    // rule); two mechanisms of one user in one request are fine.
    let mut named: BTreeMap<(String, i8), usize> = BTreeMap::new();
    let metadata = shard.metadata();
    for deletion in &request.deletions {
        let user = deletion.name.to_string();
        *named.entry((user.clone(), deletion.mechanism)).or_default() += 1;
        let change = mechanism_of(deletion.mechanism).and_then(|mechanism| {
            if metadata.scram_credential(&user, mechanism).is_none() {
                return Err((
                    code::RESOURCE_NOT_FOUND,
                    "Attempt to delete a user credential that does not exist".to_string(),
                ));
            }
            Ok(MetadataChange::DeleteScramCredential {
                user: user.clone(),
                mechanism,
            })
        });
        push(&mut by_user, user, change);
    }
    for upsertion in &request.upsertions {
        let user = upsertion.name.to_string();
        *named
            .entry((user.clone(), upsertion.mechanism))
            .or_default() += 1;
        let change = mechanism_of(upsertion.mechanism).and_then(|mechanism| {
            let unacceptable = |why: String| (code::UNACCEPTABLE_CREDENTIAL, why);
            if user.is_empty() || user.len() > USER_NAME_BYTES_MAX {
                return Err(unacceptable(format!(
                    "a user name is 1 to {USER_NAME_BYTES_MAX} bytes"
                )));
            }
            let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
            validate_iterations(iterations).map_err(|e| unacceptable(e.to_string()))?;
            if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
                return Err(unacceptable("empty salt or salted password".into()));
            }
            let credential = ScramCredential::from_salted_password(
                mechanism,
                &upsertion.salted_password,
                &upsertion.salt,
                iterations,
            )
            .map_err(|e| unacceptable(e.to_string()))?;
            Ok(MetadataChange::SetScramCredential {
                user: user.clone(),
                mechanism,
                credential,
            })
        });
        push(&mut by_user, user, change);
    }
    let asked: Vec<Asked> = (by_user.into_iter())
        .map(|(user, changes)| {
            let twice = named.iter().any(|((u, _), n)| *u == user && *n > 1);
            let changes = match twice {
                false => changes,
                true => Err((
                    code::DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request".into(),
                )),
            };
            (user, changes)
        })
        .collect();
    let answered = shard
        .run_on(0, move |shard| async move {
            let mut answered = Vec::new();
            for (user, changes) in asked {
                let mut outcome = Ok(());
                match changes {
                    Err(refused) => outcome = Err(refused),
                    Ok(changes) => {
                        for change in changes {
                            if let Err(e) = shard.change_cluster(change).await {
                                outcome = Err((code::REQUEST_TIMED_OUT, e.to_string()));
                                break;
                            }
                        }
                    }
                }
                if outcome.is_ok() {
                    tracing::info!(%user, "SCRAM credentials altered");
                }
                answered.push((user, outcome));
            }
            answered
        })
        .await
        .unwrap_or_default();
    let mut response = AlterUserScramCredentialsResponse::default();
    response.results = (answered.into_iter())
        .map(|(user, outcome)| {
            let (error_code, message) = match outcome {
                Ok(()) => (code::NONE, None),
                Err((code, why)) => (code, Some(text(&why))),
            };
            AlterUserScramCredentialsResult::default()
                .with_user(text(&user))
                .with_error_code(error_code)
                .with_error_message(message)
        })
        .collect();
    response
}

fn push(
    by_user: &mut BTreeMap<String, Result<Vec<MetadataChange>, (i16, String)>>,
    user: String,
    change: Result<MetadataChange, (i16, String)>,
) {
    let entry = by_user.entry(user).or_insert_with(|| Ok(Vec::new()));
    match (entry.as_mut(), change) {
        (Ok(changes), Ok(change)) => changes.push(change),
        (Ok(_), Err(e)) => *entry = Err(e),
        (Err(_), _) => {}
    }
}

pub(super) fn describe(
    shard: &Shard,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let metadata = shard.metadata();
    let asked: Vec<String> = match request.users {
        None => metadata.users.keys().cloned().collect(),
        Some(users) => users.iter().map(|u| u.name.to_string()).collect(),
    };
    let mut response = DescribeUserScramCredentialsResponse::default();
    for user in &asked {
        let mut result = DescribeUserScramCredentialsResult::default().with_user(text(user));
        if asked.iter().filter(|u| *u == user).count() > 1 {
            result.error_code = code::DUPLICATE_RESOURCE;
            result.error_message = Some(text("Cannot describe the same user twice"));
        } else if let Some(credentials) = metadata.users.get(user) {
            result.credential_infos = (credentials.iter())
                .map(|(mechanism, credential)| {
                    CredentialInfo::default()
                        .with_mechanism(mechanism_number(*mechanism))
                        .with_iterations(credential.iterations as i32)
                })
                .collect();
        } else {
            result.error_code = code::RESOURCE_NOT_FOUND;
            result.error_message = Some(text(
                "Attempt to describe a user credential that does not exist",
            ));
        }
        response.results.push(result);
    }
    response
}
