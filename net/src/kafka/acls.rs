//! CreateAcls, DescribeAcls and DeleteAcls (v1-3): what `kafka-acls.sh`, AdminClient's
//! `create_acls` / `describe_acls` / `delete_acls` and `oxbow acl` call. ACLs are committed to
//! the metadata on shard 0, so every node decides alike. Changing ACLs needs Alter on the
//! cluster, reading them Describe (as in Kafka).

use super::wire::{code, text};
use crate::authorize::Gate;
use crate::shard::Shard;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_cluster::{
    Acl, AclFilter, MetadataChange, Operation, PatternFilter, PatternType, Permission, ResourceType,
};

/// Kafka's number for "any" in a filter.
const ANY: i8 = 1;
/// Kafka's number for "match" in a filter's pattern type.
const MATCH: i8 = 2;

/// An ACL from a CreateAcls entry's numbers, or why not.
fn acl_of(c: &kafka_protocol::messages::create_acls_request::AclCreation) -> Result<Acl, String> {
    let acl = Acl {
        resource_type: ResourceType::from_kafka(c.resource_type)
            .ok_or(format!("resource type {}", c.resource_type))?,
        resource_name: c.resource_name.to_string(),
        pattern_type: PatternType::from_kafka(c.resource_pattern_type)
            .ok_or(format!("pattern type {}", c.resource_pattern_type))?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_kafka(c.operation)
            .ok_or(format!("operation {}", c.operation))?,
        permission: Permission::from_kafka(c.permission_type)
            .ok_or(format!("permission {}", c.permission_type))?,
    };
    // Checked one by one: one bad entry must not fail the others' commit.
    acl.check().map_err(|e| e.to_string())?;
    Ok(acl)
}

/// A filter from Kafka's numbers (1 is "any" everywhere, 2 "match" for the pattern type).
fn filter_of(
    resource_type: i8,
    resource_name: &Option<StrBytes>,
    pattern_type: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    fn or_any<T>(number: i8, from: fn(i8) -> Option<T>, what: &str) -> Result<Option<T>, String> {
        match number {
            ANY => Ok(None),
            n => from(n).map(Some).ok_or(format!("{what} {n}")),
        }
    }
    Ok(AclFilter {
        resource_type: or_any(resource_type, ResourceType::from_kafka, "resource type")?,
        resource_name: resource_name.as_ref().map(|n| n.to_string()),
        pattern: match pattern_type {
            ANY => PatternFilter::Any,
            MATCH => PatternFilter::Match,
            n => PatternFilter::Exactly(
                PatternType::from_kafka(n).ok_or(format!("pattern type {n}"))?,
            ),
        },
        principal: principal.as_ref().map(|p| p.to_string()),
        host: host.as_ref().map(|h| h.to_string()),
        operation: or_any(operation, Operation::from_kafka, "operation")?,
        permission: or_any(permission, Permission::from_kafka, "permission")?,
    })
}

pub(super) async fn create(
    shard: &Shard,
    gate: &Gate<'_>,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let mut response = CreateAclsResponse::default();
    let answer = |code: i16, message: Option<String>| {
        AclCreationResult::default()
            .with_error_code(code)
            .with_error_message(message.map(|m| text(&m)))
    };
    if !gate.cluster(Operation::Alter) {
        let denied = || answer(code::CLUSTER_AUTHORIZATION_FAILED, None);
        response.results = request.creations.iter().map(|_| denied()).collect();
        return response;
    }
    let parsed: Vec<Result<Acl, String>> = request.creations.iter().map(acl_of).collect();
    let acls: Vec<Acl> = parsed.iter().flatten().cloned().collect();
    let committed = match acls.is_empty() {
        true => Ok(()),
        false => {
            let change = MetadataChange::CreateAcls { acls };
            let done = shard.run_on(0, |s| async move {
                s.change_cluster(change).await.map_err(|e| e.to_string())
            });
            done.await.unwrap_or_else(|| Err("shard 0 is gone".into()))
        }
    };
    response.results = (parsed.into_iter())
        .map(|acl| match (acl, &committed) {
            (Err(why), _) => answer(code::INVALID_REQUEST, Some(why)),
            (Ok(_), Err(why)) => answer(code::REQUEST_TIMED_OUT, Some(why.clone())),
            (Ok(_), Ok(())) => answer(code::NONE, None),
        })
        .collect();
    response
}

pub(super) fn describe(
    shard: &Shard,
    gate: &Gate<'_>,
    r: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let mut response = DescribeAclsResponse::default();
    if !gate.cluster(Operation::Describe) {
        response.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        return response;
    }
    let filter = filter_of(
        r.resource_type_filter,
        &r.resource_name_filter,
        r.pattern_type_filter,
        &r.principal_filter,
        &r.host_filter,
        r.operation,
        r.permission_type,
    );
    let filter = match filter {
        Ok(filter) => filter,
        Err(why) => {
            response.error_code = code::INVALID_REQUEST;
            response.error_message = Some(text(&why));
            return response;
        }
    };
    let metadata = shard.metadata();
    for acl in metadata.acls.iter().filter(|acl| filter.matches(acl)) {
        let description = AclDescription::default()
            .with_principal(text(&acl.principal))
            .with_host(text(&acl.host))
            .with_operation(acl.operation as i8)
            .with_permission_type(acl.permission as i8);
        let same = |r: &&mut DescribeAclsResource| {
            r.resource_type == acl.resource_type as i8
                && r.resource_name.as_str() == acl.resource_name
                && r.pattern_type == acl.pattern_type as i8
        };
        match response.resources.iter_mut().find(same) {
            Some(resource) => resource.acls.push(description),
            None => response.resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(acl.resource_type as i8)
                    .with_resource_name(text(&acl.resource_name))
                    .with_pattern_type(acl.pattern_type as i8)
                    .with_acls(vec![description]),
            ),
        }
    }
    response
}

pub(super) async fn delete(
    shard: &Shard,
    gate: &Gate<'_>,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let mut response = DeleteAclsResponse::default();
    let failed = |code: i16, why: Option<String>| {
        DeleteAclsFilterResult::default()
            .with_error_code(code)
            .with_error_message(why.map(|w| text(&w)))
    };
    if !gate.cluster(Operation::Alter) {
        let denied = || failed(code::CLUSTER_AUTHORIZATION_FAILED, None);
        response.filter_results = request.filters.iter().map(|_| denied()).collect();
        return response;
    }
    let filters: Vec<Result<AclFilter, String>> = (request.filters.iter())
        .map(|f| {
            filter_of(
                f.resource_type_filter,
                &f.resource_name_filter,
                f.pattern_type_filter,
                &f.principal_filter,
                &f.host_filter,
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    // What each filter removes, as of the metadata the deletion is decided on.
    let metadata = shard.metadata();
    let valid: Vec<AclFilter> = filters.iter().flatten().cloned().collect();
    let committed = match valid.is_empty() {
        true => Ok(()),
        false => {
            let change = MetadataChange::DeleteAcls { filters: valid };
            let done = shard.run_on(0, |s| async move {
                s.change_cluster(change).await.map_err(|e| e.to_string())
            });
            done.await.unwrap_or_else(|| Err("shard 0 is gone".into()))
        }
    };
    response.filter_results = (filters.into_iter())
        .map(|filter| match (filter, &committed) {
            (Err(why), _) => failed(code::INVALID_REQUEST, Some(why)),
            (Ok(_), Err(why)) => failed(code::REQUEST_TIMED_OUT, Some(why.clone())),
            (Ok(filter), Ok(())) => {
                let matching = (metadata.acls.iter()).filter(|acl| filter.matches(acl));
                failed(code::NONE, None).with_matching_acls(
                    matching
                        .map(|acl| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(acl.resource_type as i8)
                                .with_resource_name(text(&acl.resource_name))
                                .with_pattern_type(acl.pattern_type as i8)
                                .with_principal(text(&acl.principal))
                                .with_host(text(&acl.host))
                                .with_operation(acl.operation as i8)
                                .with_permission_type(acl.permission as i8)
                        })
                        .collect(),
                )
            }
        })
        .collect();
    response
}
