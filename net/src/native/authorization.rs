//! The ACLs on the native protocol: each request frame needs what its Kafka counterpart needs
//! (produce: Write on the topic; subscribe: Read on the topic and on the subscription, which
//! is a group; topic and subscription administration: Create, Alter, Delete or Describe).
//! An attached consumer is checked again at every Flow, as Kafka checks every Fetch.
//! A client that did not authenticate (on a listener without SASL) is `User:ANONYMOUS`.

use crate::authorize::Gate;
use oxbow_cluster::{Operation, ResourceType};
use oxbow_core::native::ClientFrame;

/// One thing a request needs: an operation on a resource of a type.
type Need<'a> = (ResourceType, &'a str, Operation);

/// What `frame` needs, with its request id.
fn needs(frame: &ClientFrame) -> Option<(u64, Vec<Need<'_>>)> {
    use Operation::*;
    use ResourceType::{Group, Topic};
    Some(match frame {
        ClientFrame::Produce {
            request_id, topic, ..
        } => (*request_id, vec![(Topic, topic, Write)]),
        ClientFrame::Subscribe {
            request_id,
            topic,
            subscription,
            ..
        } => (*request_id, consumer_needs(topic, subscription).to_vec()),
        // Create on the cluster or the topic: decided in `refusal`.
        ClientFrame::CreateTopic { .. } => return None,
        ClientFrame::CreatePartitions {
            request_id, name, ..
        } => (*request_id, vec![(Topic, name, Alter)]),
        ClientFrame::AlterTopicConfigs {
            request_id, name, ..
        } => (*request_id, vec![(Topic, name, AlterConfigs)]),
        ClientFrame::DeleteTopic { request_id, name } => (*request_id, vec![(Topic, name, Delete)]),
        // Answered with the topics the principal may describe.
        ClientFrame::ListTopics { .. } => return None,
        ClientFrame::Metadata { request_id, topics } => (
            *request_id,
            topics
                .iter()
                .map(|t| (Topic, t.as_str(), Describe))
                .collect(),
        ),
        ClientFrame::DescribeTopic { request_id, name } => {
            (*request_id, vec![(Topic, name, Describe)])
        }
        ClientFrame::ListSubscriptions { request_id, topic } => {
            (*request_id, vec![(Topic, topic, Describe)])
        }
        ClientFrame::ResetSubscription {
            request_id,
            topic,
            subscription,
            ..
        } => (
            *request_id,
            vec![(Topic, topic, Read), (Group, subscription, Read)],
        ),
        // Pulsar asks for topic administration to set a subscription's dispatch rate.
        ClientFrame::SetDispatchRate {
            request_id,
            topic,
            subscription,
            ..
        } => (
            *request_id,
            vec![(Topic, topic, AlterConfigs), (Group, subscription, Read)],
        ),
        ClientFrame::DeleteSubscription {
            request_id,
            subscription,
            ..
        } => (*request_id, vec![(Group, subscription, Delete)]),
        ClientFrame::SkipBatch {
            request_id, topic, ..
        } => (*request_id, vec![(Topic, topic, Alter)]),
        // The rest act on the connection's own consumers, authorized when they subscribed
        // and again at every Flow (`consumer_refusal`).
        _ => return None,
    })
}

/// What a consumer needs to subscribe and to go on reading: Read on the topic and on its
/// subscription, which is a group.
fn consumer_needs<'a>(topic: &'a str, subscription: &'a str) -> [Need<'a>; 2] {
    [
        (ResourceType::Topic, topic, Operation::Read),
        (ResourceType::Group, subscription, Operation::Read),
    ]
}

/// Why an attached consumer of `subscription` on `topic` may no longer read, if it may not.
pub(super) fn consumer_refusal(gate: &Gate<'_>, topic: &str, subscription: &str) -> Option<String> {
    first_denied(gate, consumer_needs(topic, subscription))
}

fn first_denied<'a>(gate: &Gate<'_>, needs: impl IntoIterator<Item = Need<'a>>) -> Option<String> {
    let denied = (needs.into_iter()).find(|&(kind, name, op)| !gate.permits(kind, name, op))?;
    let (kind, name, op) = denied;
    Some(format!("not authorized: {op:?} on {kind:?} {name}"))
}

/// `Some((request id, why))` when the ACLs refuse `frame`.
pub(super) fn refusal(gate: &Gate<'_>, frame: &ClientFrame) -> Option<(u64, String)> {
    if let ClientFrame::CreateTopic {
        request_id, name, ..
    } = frame
    {
        return (!gate.may_create_topic(name)).then(|| {
            (
                *request_id,
                format!("not authorized: Create on topic {name}"),
            )
        });
    }
    if let ClientFrame::InitProducer { request_id } = frame {
        return (!gate.may_produce_idempotently()).then(|| {
            (
                *request_id,
                "not authorized: IdempotentWrite on the cluster (or Write on a topic)".into(),
            )
        });
    }
    let (request_id, needs) = needs(frame)?;
    Some((request_id, first_denied(gate, needs)?))
}
