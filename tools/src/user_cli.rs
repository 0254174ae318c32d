//! `oxbow user`: SASL/SCRAM users, through a running broker's Kafka listener
//! (AlterUserScramCredentials / DescribeUserScramCredentials, as `kafka-configs.sh` uses) or,
//! for the first administrator of a broker that requires authentication, in a stopped
//! broker's data directory (committed when it next starts).

use crate::access::KafkaAccess;
use crate::bench::kafka::Connection;
use crate::output::{print, Output};
use clap::Subcommand;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_core::auth::{salted_password, Mechanism, ScramCredential, ITERATIONS_MIN};
use oxbow_net::kafka::mechanism_number;
use oxbow_net::runtime::bootstrap_users::{self, BootstrapUser};
use serde::Serialize;
use std::path::PathBuf;

/// Where users are changed.
#[derive(clap::Args)]
pub struct UserTarget {
    /// Kafka address of a running broker.
    #[arg(long, global = true, conflicts_with = "data_dir")]
    broker: Option<String>,
    /// Data directory of a stopped broker (`create` only): the user is created when it starts.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user, or give an existing one a new password for the mechanism.
    Create {
        /// User name.
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// Read the password from the first line of standard input (the only way: never a flag).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// PBKDF2 iterations (Kafka's bounds: 4096 to 16384).
        #[arg(long, default_value_t = ITERATIONS_MIN)]
        iterations: u32,
    },
    /// Remove a user's credential for a mechanism.
    Delete {
        /// User name.
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
    },
    /// List users and their mechanisms.
    List,
}

#[derive(Serialize)]
struct ListedUser {
    user: String,
    mechanisms: Vec<ListedMechanism>,
}

#[derive(Serialize)]
struct ListedMechanism {
    mechanism: String,
    iterations: i32,
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err("the password on standard input is empty".into());
    }
    Ok(password)
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Runs a user command.
pub fn run(
    target: UserTarget,
    access: &KafkaAccess,
    output: Output,
    command: UserCommand,
) -> Result<(), String> {
    if let Some(data_dir) = &target.data_dir {
        let UserCommand::Create {
            name,
            mechanism,
            iterations,
            ..
        } = command
        else {
            return Err("with --data-dir only `create` works: use --broker".into());
        };
        let mechanism: Mechanism = mechanism.parse().map_err(|e| format!("{e}"))?;
        let password = read_password()?;
        let credential = ScramCredential::generate(mechanism, password.as_bytes(), iterations)
            .map_err(|e| e.to_string())?;
        let user = name.clone();
        bootstrap_users::add(
            data_dir,
            BootstrapUser {
                user,
                mechanism,
                credential,
            },
        )?;
        eprintln!("user {name} ({mechanism}) will be created when the broker starts");
        return Ok(());
    }
    let broker = target
        .broker
        .unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the client runtime: {e}"))?;
    runtime.block_on(async {
        let mut connection = Connection::open(&broker, access).await?;
        match command {
            UserCommand::Create {
                name,
                mechanism,
                iterations,
                ..
            } => {
                let mechanism: Mechanism = mechanism.parse().map_err(|e| format!("{e}"))?;
                let password = read_password()?;
                let credential =
                    ScramCredential::generate(mechanism, password.as_bytes(), iterations)
                        .map_err(|e| e.to_string())?;
                let salted =
                    salted_password(mechanism, password.as_bytes(), &credential.salt, iterations)
                        .map_err(|e| e.to_string())?;
                let upsertion = ScramCredentialUpsertion::default()
                    .with_name(text(&name))
                    .with_mechanism(mechanism_number(mechanism))
                    .with_iterations(iterations as i32)
                    .with_salt(credential.salt.into())
                    .with_salted_password(salted.into());
                let request =
                    AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
                answered(connection.call(0, &request).await?)
            }
            UserCommand::Delete { name, mechanism } => {
                let mechanism: Mechanism = mechanism.parse().map_err(|e| format!("{e}"))?;
                let deletion = ScramCredentialDeletion::default()
                    .with_name(text(&name))
                    .with_mechanism(mechanism_number(mechanism));
                let request =
                    AlterUserScramCredentialsRequest::default().with_deletions(vec![deletion]);
                answered(connection.call(0, &request).await?)
            }
            UserCommand::List => {
                let request = DescribeUserScramCredentialsRequest::default().with_users(None);
                let described = connection.call(0, &request).await?;
                if described.error_code != 0 {
                    return Err(format!(
                        "DescribeUserScramCredentials: error {}",
                        described.error_code
                    ));
                }
                let users: Vec<ListedUser> = (described.results.into_iter())
                    .map(|r| ListedUser {
                        user: r.user.to_string(),
                        mechanisms: (r.credential_infos.into_iter())
                            .map(|c| ListedMechanism {
                                mechanism: match c.mechanism {
                                    1 => "SCRAM-SHA-256".into(),
                                    2 => "SCRAM-SHA-512".into(),
                                    other => format!("unknown ({other})"),
                                },
                                iterations: c.iterations,
                            })
                            .collect(),
                    })
                    .collect();
                print(output, &users, |users: &Vec<ListedUser>| {
                    println!("user\tmechanism\titerations");
                    for u in users {
                        for m in &u.mechanisms {
                            println!("{}\t{}\t{}", u.user, m.mechanism, m.iterations);
                        }
                    }
                })
            }
        }
    })
}

fn answered(response: AlterUserScramCredentialsResponse) -> Result<(), String> {
    for result in response.results {
        if result.error_code != 0 {
            let message = result
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_default();
            return Err(format!(
                "user {}: error {}: {message}",
                result.user, result.error_code
            ));
        }
    }
    Ok(())
}
