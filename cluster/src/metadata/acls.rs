//! Kafka's ACLs: who may do what to which resource, kept in the metadata so every node of a
//! cluster decides alike. The decision follows Kafka's `StandardAuthorizer`: a matching DENY
//! wins; else a matching ALLOW (an operation also allows the ones it implies, as Read, Write,
//! Delete and Alter imply Describe); else, when no ACL names the resource at all,
//! `allow_everyone_if_no_acl_found`; else no.

use super::{Metadata, MetadataError};
use serde::{Deserialize, Serialize};

/// What an ACL is about (Kafka's `ResourceType`, with its numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic = 2,
    /// A consumer group (Kafka groups, and the groups of native subscriptions).
    Group = 3,
    /// The cluster (one resource, named `kafka-cluster`).
    Cluster = 4,
    /// A transactional id.
    TransactionalId = 5,
}

impl ResourceType {
    /// From Kafka's number (ANY and UNKNOWN are not resource types).
    pub fn from_kafka(number: i8) -> Option<ResourceType> {
        use ResourceType::*;
        [Topic, Group, Cluster, TransactionalId]
            .into_iter()
            .find(|t| *t as i8 == number)
    }
}

impl PatternType {
    /// From Kafka's number.
    pub fn from_kafka(number: i8) -> Option<PatternType> {
        [PatternType::Literal, PatternType::Prefixed]
            .into_iter()
            .find(|t| *t as i8 == number)
    }
}

impl Operation {
    /// Every operation an ACL can hold.
    pub const ALL: [Operation; 11] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    /// From Kafka's number (ANY and UNKNOWN are not operations an ACL can hold).
    pub fn from_kafka(number: i8) -> Option<Operation> {
        (Operation::ALL.into_iter()).find(|o| *o as i8 == number)
    }
}

impl Permission {
    /// From Kafka's number.
    pub fn from_kafka(number: i8) -> Option<Permission> {
        [Permission::Deny, Permission::Allow]
            .into_iter()
            .find(|p| *p as i8 == number)
    }
}

/// The one name of the cluster resource.
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";

/// How an ACL's resource name matches (Kafka's `PatternType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The exact name, or every name when it is `*`.
    Literal = 3,
    /// Every name that starts with it.
    Prefixed = 4,
}

/// What may be done (Kafka's `AclOperation`, with its numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation.
    All = 2,
    /// Consume; join a group.
    Read = 3,
    /// Produce.
    Write = 4,
    /// Create topics.
    Create = 5,
    /// Delete topics, groups.
    Delete = 6,
    /// Change partitions, users, ACLs.
    Alter = 7,
    /// See that it exists, its offsets.
    Describe = 8,
    /// Broker-to-broker actions.
    ClusterAction = 9,
    /// Read configs.
    DescribeConfigs = 10,
    /// Change configs.
    AlterConfigs = 11,
    /// Idempotent produce (a producer id).
    IdempotentWrite = 12,
}

impl Operation {
    /// Whether denying `self` denies `asked`.
    fn denies(self, asked: Operation) -> bool {
        self == asked || self == Operation::All
    }

    /// Whether allowing `self` also allows `asked` (Kafka's implied operations).
    fn allows(self, asked: Operation) -> bool {
        use Operation::*;
        self == asked
            || self == All
            || (asked == Describe && matches!(self, Read | Write | Delete | Alter))
            || (asked == DescribeConfigs && self == AlterConfigs)
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// A matching DENY beats every ALLOW.
    Deny = 2,
    /// Allowed, unless denied.
    Allow = 3,
}

/// One ACL (Kafka's `AclBinding`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Acl {
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// Its name (or prefix, or `*`).
    pub resource_name: String,
    /// How the name matches.
    pub pattern_type: PatternType,
    /// `User:NAME`, or `User:*` for everyone.
    pub principal: String,
    /// The client's IP address, or `*` for any.
    pub host: String,
    /// What is allowed or denied.
    pub operation: Operation,
    /// Allowed or denied.
    pub permission: Permission,
}

/// What a request needs: `operation` on the resource `resource_type` named `name`.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// Its name.
    pub name: &'a str,
    /// The operation.
    pub operation: Operation,
}

impl Acl {
    /// Whether this ACL's resource pattern covers `resource_type` named `name`.
    fn covers(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == name || self.resource_name == "*",
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && (self.host == host || self.host == "*")
    }

    /// Whether the ACL can be kept: a resource name, the cluster named `kafka-cluster`, a
    /// `User:` principal, a host.
    pub fn check(&self) -> Result<(), MetadataError> {
        let invalid = |why: &str| Err(MetadataError::Invalid(format!("ACL {self:?}: {why}")));
        if self.resource_name.is_empty() {
            return invalid("empty resource name");
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_RESOURCE {
            return invalid("the cluster resource is named kafka-cluster");
        }
        if !self.principal.starts_with("User:") || self.principal.len() == "User:".len() {
            return invalid("the principal is User:NAME or User:*");
        }
        if self.host.is_empty() {
            return invalid("empty host");
        }
        Ok(())
    }
}

/// How a filter's resource name is compared with an ACL's (Kafka's filter pattern types).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatternFilter {
    /// ACLs of any pattern type whose name is the filter's (ANY).
    #[default]
    Any,
    /// ACLs that cover the resource the filter names: its literal, `*`, and prefixes of it
    /// (MATCH).
    Match,
    /// ACLs of this pattern type whose name is the filter's.
    Exactly(PatternType),
}

/// Which ACLs a describe or delete names (Kafka's `AclBindingFilter`): `None` matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    /// The kind of resource.
    pub resource_type: Option<ResourceType>,
    /// The resource name.
    pub resource_name: Option<String>,
    /// How the name is compared.
    pub pattern: PatternFilter,
    /// The principal.
    pub principal: Option<String>,
    /// The host.
    pub host: Option<String>,
    /// The operation.
    pub operation: Option<Operation>,
    /// The permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Whether `acl` is one of those named.
    pub fn matches(&self, acl: &Acl) -> bool {
        fn any<T: PartialEq>(wanted: &Option<T>, value: &T) -> bool {
            wanted.as_ref().is_none_or(|w| w == value)
        }
        let resource = match (self.pattern, &self.resource_name) {
            (PatternFilter::Match, Some(name)) => acl.covers(acl.resource_type, name),
            (PatternFilter::Exactly(pattern), _) if pattern != acl.pattern_type => false,
            (_, name) => any(name, &acl.resource_name),
        };
        resource
            && any(&self.resource_type, &acl.resource_type)
            && any(&self.principal, &acl.principal)
            && any(&self.host, &acl.host)
            && any(&self.operation, &acl.operation)
            && any(&self.permission, &acl.permission)
    }
}

/// The authorizer's settings that are not ACLs.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizerRules<'a> {
    /// Principals allowed everything (`User:admin`).
    pub super_users: &'a [String],
    /// Allow a resource no ACL names (Kafka's `allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
}

impl Metadata {
    /// Whether `principal` connected from `host` may have `access`.
    pub fn authorize(
        &self,
        rules: AuthorizerRules<'_>,
        principal: &str,
        host: &str,
        access: Access<'_>,
    ) -> bool {
        if rules.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let mut named = false;
        let mut allowed = false;
        for acl in self.acls.iter() {
            if !acl.covers(access.resource_type, access.name) {
                continue;
            }
            named = true;
            if !acl.applies_to(principal, host) {
                continue;
            }
            // An ALLOW also allows what its operation implies; a DENY denies only its own
            // operation (or all), as in Kafka: denying Write does not hide the topic.
            match acl.permission {
                Permission::Deny if acl.operation.denies(access.operation) => return false,
                Permission::Allow if acl.operation.allows(access.operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!named && rules.allow_everyone_if_no_acl_found)
    }

    /// Whether `principal` may write to some topic: what an idempotent producer needs for its
    /// producer id since Kafka 3.0 (KIP-679), besides IdempotentWrite on the cluster.
    pub fn may_write_some_topic(&self, principal: &str, host: &str) -> bool {
        let writes = |acl: &Acl, permission| {
            acl.permission == permission
                && acl.resource_type == ResourceType::Topic
                && acl.applies_to(principal, host)
                && acl.operation.allows(Operation::Write)
        };
        // An ALLOW counts unless a DENY covers every topic it names (Kafka's
        // `authorizeByResourceType`).
        let denied = |allow: &Acl| {
            (self.acls.iter()).any(|deny| {
                writes(deny, Permission::Deny)
                    && match deny.pattern_type {
                        PatternType::Literal => {
                            deny.resource_name == "*"
                                || (allow.pattern_type == PatternType::Literal
                                    && deny.resource_name == allow.resource_name)
                        }
                        PatternType::Prefixed => {
                            allow.resource_name.starts_with(&deny.resource_name)
                        }
                    }
            })
        };
        (self.acls.iter()).any(|allow| writes(allow, Permission::Allow) && !denied(allow))
    }

    pub(super) fn create_acls(&mut self, acls: &[Acl]) -> Result<(), MetadataError> {
        for acl in acls {
            acl.check()?;
        }
        self.acls.extend(acls.iter().cloned());
        self.acls.sort();
        self.acls.dedup();
        Ok(())
    }

    pub(super) fn delete_acls(&mut self, filters: &[AclFilter]) {
        self.acls
            .retain(|acl| !filters.iter().any(|filter| filter.matches(acl)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        kind: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        permission: Permission,
    ) -> Acl {
        Acl {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission,
        }
    }

    fn with(acls: Vec<Acl>) -> Metadata {
        let mut metadata = Metadata::default();
        metadata.create_acls(&acls).unwrap();
        metadata
    }

    const CLOSED: AuthorizerRules<'static> = AuthorizerRules {
        super_users: &[],
        allow_everyone_if_no_acl_found: false,
    };

    fn may(
        m: &Metadata,
        rules: AuthorizerRules<'_>,
        who: &str,
        kind: ResourceType,
        name: &str,
        op: Operation,
    ) -> bool {
        let access = Access {
            resource_type: kind,
            name,
            operation: op,
        };
        m.authorize(rules, who, "10.0.0.1", access)
    }

    #[test]
    fn deny_beats_allow_prefixes_and_wildcards_match_and_operations_imply_describe() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let m = with(vec![
            acl(Topic, "orders-", Prefixed, "User:alice", Write, Allow),
            acl(Topic, "orders-secret", Literal, "User:alice", Write, Deny),
            acl(Topic, "*", Literal, "User:*", Read, Allow),
            acl(Group, "billing", Literal, "User:alice", All, Allow),
        ]);
        let alice = |kind, name, op| may(&m, CLOSED, "User:alice", kind, name, op);
        assert!(alice(Topic, "orders-eu", Write));
        assert!(
            alice(Topic, "orders-eu", Describe),
            "Write implies Describe"
        );
        assert!(!alice(Topic, "orders-secret", Write), "the deny wins");
        assert!(
            alice(Topic, "orders-secret", Describe),
            "a deny implies nothing"
        );
        assert!(!alice(Topic, "payments", Write));
        assert!(alice(Topic, "payments", Read), "* and User:* match");
        assert!(
            alice(Group, "billing", Read) && alice(Group, "billing", Delete),
            "All"
        );
        assert!(!alice(Group, "shipping", Read));
        assert!(!may(&m, CLOSED, "User:bob", Topic, "orders-eu", Write));
        // A resource no ACL names: closed unless allow_everyone_if_no_acl_found, a named one
        // stays closed to the unnamed; super users pass everything.
        let open = AuthorizerRules {
            allow_everyone_if_no_acl_found: true,
            ..CLOSED
        };
        assert!(!may(
            &m,
            CLOSED,
            "User:bob",
            Cluster,
            CLUSTER_RESOURCE,
            Alter
        ));
        assert!(may(&m, open, "User:bob", Cluster, CLUSTER_RESOURCE, Alter));
        assert!(!may(&m, open, "User:bob", Group, "billing", Read));
        let admin = ["User:admin".to_string()];
        let supers = AuthorizerRules {
            super_users: &admin,
            ..CLOSED
        };
        assert!(may(&m, supers, "User:admin", Topic, "orders-secret", Write));
        // Hosts are exact or *.
        let mut m = with(vec![Acl {
            host: "10.0.0.2".into(),
            ..acl(Topic, "t", Literal, "User:carol", Write, Allow)
        }]);
        assert!(!may(&m, CLOSED, "User:carol", Topic, "t", Write));
        m.create_acls(&[acl(Topic, "t", Literal, "User:carol", Write, Allow)])
            .unwrap();
        assert!(may(&m, CLOSED, "User:carol", Topic, "t", Write));
    }

    #[test]
    fn filters_delete_what_they_name_and_match_finds_what_applies() {
        use PatternType::*;
        let m = with(vec![
            acl(
                ResourceType::Topic,
                "orders-",
                Prefixed,
                "User:alice",
                Operation::Write,
                Permission::Allow,
            ),
            acl(
                ResourceType::Topic,
                "orders-eu",
                Literal,
                "User:bob",
                Operation::Read,
                Permission::Allow,
            ),
            acl(
                ResourceType::Topic,
                "*",
                Literal,
                "User:carol",
                Operation::Read,
                Permission::Allow,
            ),
        ]);
        let matching = AclFilter {
            resource_type: Some(ResourceType::Topic),
            resource_name: Some("orders-eu".into()),
            pattern: PatternFilter::Match,
            ..AclFilter::default()
        };
        assert_eq!(m.acls.iter().filter(|a| matching.matches(a)).count(), 3);
        let exact = AclFilter {
            pattern: PatternFilter::Exactly(Literal),
            ..matching.clone()
        };
        assert_eq!(m.acls.iter().filter(|a| exact.matches(a)).count(), 1);
        let mut m = m;
        m.delete_acls(&[AclFilter {
            principal: Some("User:alice".into()),
            ..AclFilter::default()
        }]);
        assert_eq!(m.acls.len(), 2);
        assert!(!m.may_write_some_topic("User:alice", "h"));
        // Invalid ACLs are refused whole.
        let bad = acl(
            ResourceType::Cluster,
            "other",
            Literal,
            "User:a",
            Operation::Alter,
            Permission::Allow,
        );
        assert!(m.create_acls(&[bad]).is_err());
        let bad = acl(
            ResourceType::Topic,
            "t",
            Literal,
            "alice",
            Operation::Read,
            Permission::Allow,
        );
        assert!(m.create_acls(&[bad]).is_err());
    }

    #[test]
    fn an_idempotent_producer_needs_write_on_some_topic_not_denied_everywhere() {
        use Operation::Write;
        use PatternType::*;
        use Permission::*;
        let t = ResourceType::Topic;
        assert!(with(vec![acl(t, "a", Literal, "User:p", Write, Allow)])
            .may_write_some_topic("User:p", "h"));
        assert!(!with(vec![acl(t, "a", Literal, "User:q", Write, Allow)])
            .may_write_some_topic("User:p", "h"));
        let denied = with(vec![
            acl(t, "a-", Prefixed, "User:p", Write, Allow),
            acl(t, "a", Prefixed, "User:p", Write, Deny),
        ]);
        assert!(!denied.may_write_some_topic("User:p", "h"));
        let everywhere = with(vec![
            acl(t, "a", Literal, "User:p", Write, Allow),
            acl(t, "*", Literal, "User:p", Write, Deny),
        ]);
        assert!(!everywhere.may_write_some_topic("User:p", "h"));
    }
}
