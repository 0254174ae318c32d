//! The authorizer as a request sees it: may this connection's principal, from its host, do
//! this to that resource? Every denial is counted and written to the audit log (target
//! `oxbow::audit`: principal, host, operation, resource); allowed requests are not logged.

use crate::session::Session;
use crate::shard::Shard;
use oxbow_cluster::{Access, AuthorizerRules, Metadata, Operation, ResourceType, CLUSTER_RESOURCE};
use std::sync::Arc;

/// One request's view of the authorizer.
pub struct Gate<'a> {
    shard: &'a Shard,
    /// `None` when the authorizer is off: everything is allowed.
    checked: Option<Checked>,
}

struct Checked {
    metadata: Arc<Metadata>,
    principal: String,
    host: String,
}

impl<'a> Gate<'a> {
    /// The gate for a request of `session` on `shard`.
    pub fn new(shard: &'a Shard, session: &Session) -> Gate<'a> {
        let checked = shard.config.authorizer.enabled.then(|| Checked {
            metadata: shard.metadata(),
            principal: session.principal.to_string(),
            // `::ffff:10.0.0.5` on a dual-stack listener is 10.0.0.5 to an ACL.
            host: (session.peer)
                .map(|p| p.ip().to_canonical().to_string())
                .unwrap_or_default(),
        });
        Gate { shard, checked }
    }

    /// Whether `operation` on the resource is allowed; a denial is counted and logged.
    pub fn permits(&self, resource_type: ResourceType, name: &str, operation: Operation) -> bool {
        let Some(checked) = &self.checked else {
            return true;
        };
        let allowed = self.decides(checked, resource_type, name, operation);
        if !allowed {
            crate::metrics::of(self.shard).authorization_denied();
            tracing::info!(target: "oxbow::audit", principal = %checked.principal,
                host = %checked.host, ?operation, ?resource_type, resource = name, "denied");
        }
        allowed
    }

    /// Whether the principal may describe a topic, neither counted nor logged: for leaving
    /// topics out of a listing, as Kafka does.
    pub fn sees_topic(&self, name: &str) -> bool {
        let describes = |c| self.decides(c, ResourceType::Topic, name, Operation::Describe);
        self.checked.as_ref().is_none_or(describes)
    }

    /// Whether the principal may describe a group, neither counted nor logged (for listings).
    pub fn sees_group(&self, name: &str) -> bool {
        let describes = |c| self.decides(c, ResourceType::Group, name, Operation::Describe);
        self.checked.as_ref().is_none_or(describes)
    }

    /// Whether the principal may describe the cluster, neither counted nor logged.
    pub fn sees_cluster(&self) -> bool {
        let describes = |c| {
            self.decides(
                c,
                ResourceType::Cluster,
                CLUSTER_RESOURCE,
                Operation::Describe,
            )
        };
        self.checked.as_ref().is_none_or(describes)
    }

    /// `permits` on a topic.
    pub fn topic(&self, name: &str, operation: Operation) -> bool {
        self.permits(ResourceType::Topic, name, operation)
    }

    /// `permits` on a group.
    pub fn group(&self, name: &str, operation: Operation) -> bool {
        self.permits(ResourceType::Group, name, operation)
    }

    /// `permits` on a transactional id.
    pub fn transactional_id(&self, name: &str, operation: Operation) -> bool {
        self.permits(ResourceType::TransactionalId, name, operation)
    }

    /// `permits` on the cluster.
    pub fn cluster(&self, operation: Operation) -> bool {
        self.permits(ResourceType::Cluster, CLUSTER_RESOURCE, operation)
    }

    /// Whether a topic may be created: Create on the cluster or on the topic (as in Kafka).
    pub fn may_create_topic(&self, name: &str) -> bool {
        let on_cluster = |checked| {
            self.decides(
                checked,
                ResourceType::Cluster,
                CLUSTER_RESOURCE,
                Operation::Create,
            )
        };
        self.checked.as_ref().is_none_or(on_cluster) || self.topic(name, Operation::Create)
    }

    /// Whether an idempotent producer may have a producer id: Write on some topic (Kafka
    /// since 3.0, KIP-679) or IdempotentWrite on the cluster.
    pub fn may_produce_idempotently(&self) -> bool {
        let writes = |c: &Checked| c.metadata.may_write_some_topic(&c.principal, &c.host);
        self.checked.as_ref().is_none_or(writes) || self.cluster(Operation::IdempotentWrite)
    }

    /// The decision alone, neither counted nor logged (for the first of two alternatives).
    fn decides(
        &self,
        checked: &Checked,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> bool {
        let config = &self.shard.config.authorizer;
        let rules = AuthorizerRules {
            super_users: &config.super_users,
            allow_everyone_if_no_acl_found: config.allow_everyone_if_no_acl_found,
        };
        let access = Access {
            resource_type,
            name,
            operation,
        };
        (checked.metadata).authorize(rules, &checked.principal, &checked.host, access)
    }
}
