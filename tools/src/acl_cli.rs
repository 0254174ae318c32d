//! `oxbow acl`: Kafka ACLs through a running broker's Kafka listener (CreateAcls,
//! DescribeAcls, DeleteAcls, as `kafka-acls.sh` uses them).

use crate::access::KafkaAccess;
use crate::bench::kafka::Connection;
use crate::output::{print, Output};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use oxbow_cluster::{Operation, PatternType, Permission, ResourceType};
use serde::Serialize;

/// Kafka's "any" in filters.
const ANY: i8 = 1;

/// The resource an ACL is about.
#[derive(Args)]
pub struct ResourceArg {
    /// A topic (or a prefix of topic names, with --prefixed; `*` for every topic).
    #[arg(long, conflicts_with_all = ["group", "cluster"])]
    topic: Option<String>,
    /// A consumer group or native subscription (or a prefix, with --prefixed).
    #[arg(long, conflicts_with = "cluster")]
    group: Option<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
    /// The name is a prefix.
    #[arg(long)]
    prefixed: bool,
}

impl ResourceArg {
    fn named(&self) -> Option<(ResourceType, String)> {
        match (&self.topic, &self.group, self.cluster) {
            (Some(topic), _, _) => Some((ResourceType::Topic, topic.clone())),
            (_, Some(group), _) => Some((ResourceType::Group, group.clone())),
            (_, _, true) => Some((
                ResourceType::Cluster,
                oxbow_cluster::CLUSTER_RESOURCE.into(),
            )),
            _ => None,
        }
    }

    fn pattern(&self) -> PatternType {
        match self.prefixed {
            true => PatternType::Prefixed,
            false => PatternType::Literal,
        }
    }
}

#[derive(Subcommand)]
pub enum AclCommand {
    /// Allow (or with --deny, deny) a principal operations on a resource.
    Add {
        /// `User:NAME`, or `User:*` for everyone.
        #[arg(long)]
        principal: String,
        /// The client's IP address, or `*`.
        #[arg(long, default_value = "*")]
        host: String,
        /// Read, Write, Create, Delete, Alter, Describe, DescribeConfigs, AlterConfigs,
        /// IdempotentWrite, ClusterAction or All; repeat for several.
        #[arg(long, required = true)]
        operation: Vec<String>,
        /// Deny instead of allow (a deny beats every allow).
        #[arg(long)]
        deny: bool,
        #[command(flatten)]
        resource: ResourceArg,
    },
    /// Remove the ACLs of a principal on a resource (every operation unless named).
    Remove {
        /// `User:NAME`.
        #[arg(long)]
        principal: Option<String>,
        /// One operation only.
        #[arg(long)]
        operation: Option<String>,
        #[command(flatten)]
        resource: ResourceArg,
    },
    /// List ACLs (of a resource, when named).
    List {
        #[command(flatten)]
        resource: ResourceArg,
    },
}

fn operation(name: &str) -> Result<Operation, String> {
    (Operation::ALL.into_iter())
        .find(|o| format!("{o:?}").eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("unknown operation {name:?}"))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

#[derive(Serialize)]
struct ListedAcl {
    resource_type: String,
    resource: String,
    pattern: String,
    principal: String,
    host: String,
    operation: String,
    permission: String,
}

fn name_of<T: std::fmt::Debug>(number: i8, from: fn(i8) -> Option<T>) -> String {
    from(number).map_or_else(|| number.to_string(), |v| format!("{v:?}"))
}

/// Runs an ACL command against the Kafka listener at `broker`.
pub fn run(
    broker: &str,
    access: &KafkaAccess,
    output: Output,
    command: AclCommand,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the client runtime: {e}"))?;
    runtime.block_on(async {
        let mut connection = Connection::open(broker, access).await?;
        match command {
            AclCommand::Add {
                principal,
                host,
                operation: operations,
                deny,
                resource,
            } => {
                let (kind, name) = resource
                    .named()
                    .ok_or("name a --topic, --group or --cluster")?;
                let permission = if deny {
                    Permission::Deny
                } else {
                    Permission::Allow
                };
                let mut creations = Vec::new();
                for op in &operations {
                    creations.push(
                        AclCreation::default()
                            .with_resource_type(kind as i8)
                            .with_resource_name(text(&name))
                            .with_resource_pattern_type(resource.pattern() as i8)
                            .with_principal(text(&principal))
                            .with_host(text(&host))
                            .with_operation(operation(op)? as i8)
                            .with_permission_type(permission as i8),
                    );
                }
                let request = CreateAclsRequest::default().with_creations(creations);
                let response = connection.call(2, &request).await?;
                for result in response.results {
                    if result.error_code != 0 {
                        let why = result
                            .error_message
                            .map(|m| m.to_string())
                            .unwrap_or_default();
                        return Err(format!("CreateAcls: error {}: {why}", result.error_code));
                    }
                }
                Ok(())
            }
            AclCommand::Remove {
                principal,
                operation: op,
                resource,
            } => {
                let (kind, name) = resource
                    .named()
                    .ok_or("name a --topic, --group or --cluster")?;
                let filter = DeleteAclsFilter::default()
                    .with_resource_type_filter(kind as i8)
                    .with_resource_name_filter(Some(text(&name)))
                    .with_pattern_type_filter(resource.pattern() as i8)
                    .with_principal_filter(principal.as_deref().map(text))
                    .with_host_filter(None)
                    .with_operation(match &op {
                        Some(op) => operation(op)? as i8,
                        None => ANY,
                    })
                    .with_permission_type(ANY);
                let request = DeleteAclsRequest::default().with_filters(vec![filter]);
                let response = connection.call(2, &request).await?;
                for result in response.filter_results {
                    if result.error_code != 0 {
                        return Err(format!("DeleteAcls: error {}", result.error_code));
                    }
                    eprintln!("removed {} ACLs", result.matching_acls.len());
                }
                Ok(())
            }
            AclCommand::List { resource } => {
                let named = resource.named();
                let request = DescribeAclsRequest::default()
                    .with_resource_type_filter(named.as_ref().map_or(ANY, |(k, _)| *k as i8))
                    .with_resource_name_filter(named.as_ref().map(|(_, n)| text(n)))
                    .with_pattern_type_filter(ANY)
                    .with_principal_filter(None)
                    .with_host_filter(None)
                    .with_operation(ANY)
                    .with_permission_type(ANY);
                let response = connection.call(2, &request).await?;
                if response.error_code != 0 {
                    return Err(format!("DescribeAcls: error {}", response.error_code));
                }
                let mut listed = Vec::new();
                for r in response.resources {
                    for acl in r.acls {
                        listed.push(ListedAcl {
                            resource_type: name_of(r.resource_type, ResourceType::from_kafka),
                            resource: r.resource_name.to_string(),
                            pattern: name_of(r.pattern_type, PatternType::from_kafka),
                            principal: acl.principal.to_string(),
                            host: acl.host.to_string(),
                            operation: name_of(acl.operation, Operation::from_kafka),
                            permission: name_of(acl.permission_type, Permission::from_kafka),
                        });
                    }
                }
                print(output, &listed, |acls: &Vec<ListedAcl>| {
                    println!("permission\tprincipal\thost\toperation\tresource");
                    for a in acls {
                        println!(
                            "{}\t{}\t{}\t{}\t{}:{}:{}",
                            a.permission,
                            a.principal,
                            a.host,
                            a.operation,
                            a.resource_type,
                            a.pattern,
                            a.resource
                        );
                    }
                })
            }
        }
    })
}
