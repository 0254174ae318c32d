//! Replacing a consumer's stale session: the consumer is back on a new connection while the
//! broker still holds its old one (half-open).

use super::driver::SubscriptionCell;
use super::ConsumerEvent;
use crate::subscription::ConsumerId;
use oxbow_core::native::SubscriptionType;
use std::time::Instant;

/// A consumer that attaches again under its name where one consumer is active (Exclusive,
/// Failover), or that says it is attaching again after losing its connection (any type), from
/// a new connection while its old one is still open here (half-open), replaces its stale
/// session at once. Else Exclusive would refuse it, Failover would keep delivering to the
/// stale session, and Shared and Key_Shared would leave the stale session's messages (and, in
/// Key_Shared, its keys) held until the broker noticed the dead connection
/// (`native_session_timeout_ms`). What the stale session had not acknowledged is delivered
/// again.
pub(super) fn replace(
    cell: &SubscriptionCell,
    (kind, reattaching): (SubscriptionType, bool),
    consumer: ConsumerId,
    name: &str,
) {
    let one_active = matches!(
        kind,
        SubscriptionType::Exclusive | SubscriptionType::Failover
    );
    if !one_active && !reattaching {
        return;
    }
    let stale = (cell.core.borrow().consumer_named(name)).filter(|&id| id != consumer);
    let Some(stale) = stale else {
        return;
    };
    if let Some(sink) = cell.sinks.borrow_mut().remove(&stale) {
        sink.send(ConsumerEvent::Closed {
            reason: format!("replaced by a new session of consumer {name}"),
        });
    }
    cell.core.borrow_mut().detach(Instant::now(), stale);
    tracing::info!(topic = %cell.target.topic, partition = cell.target.partition,
        subscription = %cell.target.subscription, consumer = name, "stale session replaced");
}
