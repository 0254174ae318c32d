//! One ConsumerGroupHeartbeat as the group state machine (`consumer_group.rs`) takes it: the
//! request, its two answers, Kafka's checks of its fields before any group is looked at, and
//! the subscription patterns it may carry.

use super::super::wire::code;
use super::assignor::{Assignment, Assignor};
use crate::session::Session;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

/// The member epoch a member sends to join (or rejoin after being fenced).
pub const JOIN_EPOCH: i32 = 0;
/// The member epoch a member sends to leave for good.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch a static member sends to leave for a restart: it keeps its place and its
/// partitions until its session times out (KIP-848's static membership).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// The coordinator's limits on a group.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A member silent this long is removed.
    pub session_timeout: Duration,
    /// Most members of one group.
    pub members_max: usize,
    /// Longest subscription regular expression, in bytes.
    pub regex_bytes_max: usize,
    /// Most topic names one subscription lists.
    pub subscribed_topics_max: usize,
}

/// One ConsumerGroupHeartbeat, as the wire has it (absent fields: unchanged since the last).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<BTreeSet<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns now.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// Who sent it, when the authorizer is on: a pattern matches only the topics its principal
    /// may describe (Kafka never assigns a member a topic it may not see).
    pub session: Option<Session>,
}

/// A heartbeat accepted: the member's id and epoch, and its assignment when it changed (or the
/// request was a full one, after which the member must learn it again).
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: Option<Assignment>,
}

/// A heartbeat refused, with Kafka's error code and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub code: i16,
    pub message: String,
}

pub fn refuse(code: i16, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// A subscription by regular expression: the text as sent and the compiled, anchored form
/// (shared by the members that send the same text).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    compiled: Rc<regex::Regex>,
}

impl Pattern {
    /// Whether `topic`, whole, matches.
    pub fn matches(&self, topic: &str) -> bool {
        self.compiled.is_match(topic)
    }
}

/// Kafka's checks of a heartbeat's fields, before the group is looked at.
pub fn validate(request: &Heartbeat, limits: Limits) -> Result<(), Refused> {
    let invalid = |why: &str| Err(refuse(code::INVALID_REQUEST, why));
    match request.member_epoch {
        JOIN_EPOCH => {
            if request.rebalance_timeout_ms <= 0 {
                return invalid("RebalanceTimeoutMs must be provided when joining");
            }
            if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none()
            {
                return invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set when joining",
                );
            }
            if request.owned.as_ref().is_none_or(|owned| !owned.is_empty()) {
                return invalid("TopicPartitions must be empty when joining");
            }
        }
        STATIC_LEAVE_EPOCH if request.instance_id.is_none() => {
            return invalid("only a static member (InstanceId) leaves with epoch -2");
        }
        epoch if epoch < STATIC_LEAVE_EPOCH => return invalid("MemberEpoch is invalid"),
        _ if request.member_id.is_empty() => return invalid("MemberId can't be empty"),
        _ => {}
    }
    if let Some(name) = &request.server_assignor {
        if Assignor::named(name).is_none() {
            return Err(refuse(
                code::UNSUPPORTED_ASSIGNOR,
                format!("assignor {name} is not one of uniform, range"),
            ));
        }
    }
    let names = request
        .subscribed_topic_names
        .as_ref()
        .map_or(0, BTreeSet::len);
    if names > limits.subscribed_topics_max {
        return invalid("SubscribedTopicNames lists more topics than the broker allows");
    }
    if let Some(regex) = &request.subscribed_topic_regex {
        if regex.len() > limits.regex_bytes_max {
            return Err(refuse(
                code::INVALID_REGULAR_EXPRESSION,
                format!("longer than {} bytes", limits.regex_bytes_max),
            ));
        }
    }
    Ok(())
}

/// The compiled size of a subscription pattern and of its matching cache, at most: a member
/// may send any pattern, and each distinct one is kept for the member's life.
const PATTERN_COMPILED_BYTES_MAX: usize = 64 << 10;

/// A subscription pattern, matched against whole topic names as Kafka's (RE2/J) are.
pub fn compile(text: String) -> Result<Pattern, Refused> {
    let compiled = regex::RegexBuilder::new(&format!("^(?:{text})$"))
        .size_limit(PATTERN_COMPILED_BYTES_MAX)
        .dfa_size_limit(PATTERN_COMPILED_BYTES_MAX)
        .build()
        .map_err(|e| refuse(code::INVALID_REGULAR_EXPRESSION, e.to_string()))?;
    Ok(Pattern {
        text,
        compiled: Rc::new(compiled),
    })
}
