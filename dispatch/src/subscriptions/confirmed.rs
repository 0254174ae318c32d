//! Changes answered only once durable: a consumer's `Commit` applies its acks, then writes
//! the subscription's cursor at once (not debounced) and answers when that cursor is durable
//! here and held by the partition's in-sync replicas, so that a message committed is never
//! delivered again, even after kill -9 of the leader; a new dispatch rate limit is kept in
//! the cursor the same way.

use super::driver::SubscriptionCell;
use super::Refusal;
use oxbow_core::native::{ErrorCode, Mode};
use std::rc::Rc;

/// The refusal of a commit of messages this consumer may not acknowledge.
pub(super) fn not_held(why: &str) -> Refusal {
    (ErrorCode::CommitFailed, format!("commit failed: {why}"))
}

/// Acknowledges `offsets` (or up to the one offset, `cumulative`) and waits until the cursor
/// holding them is durable.
pub(super) async fn commit(
    cell: &Rc<SubscriptionCell>,
    offsets: &[u64],
    cumulative: bool,
) -> Result<(), Refusal> {
    let state = {
        let mut core = cell.core.borrow_mut();
        if core.mode() != Mode::Reliable {
            return Err(not_held("a non-reliable subscription keeps no cursor"));
        }
        match (cumulative, offsets) {
            (true, &[offset]) => core
                .ack_cumulative(offset)
                .map_err(|why| (ErrorCode::BadRequest, why.to_string()))?,
            (true, _) => {
                return Err((
                    ErrorCode::BadRequest,
                    "a cumulative commit names one offset".into(),
                ))
            }
            (false, offsets) => core.ack(offsets),
        }
        if let Some(offset) = offsets.iter().find(|&&o| !core.is_acknowledged(o)) {
            return Err(not_held(&format!(
                "offset {offset} is not delivered to this consumer (redelivered, or not yet \
                 delivered); it will come again"
            )));
        }
        core.take_cursor_if_dirty().unwrap_or_else(|| core.cursor())
    };
    cell.wake();
    super::driver::store_cursor_durably(cell, &state)
        .await
        .map_err(|why| (ErrorCode::Storage, format!("commit failed: {why}")))
}

/// Sets a subscription's dispatch rate limit; a reliable one keeps it in its cursor, durable
/// when this returns.
pub(super) async fn set_dispatch_rate(
    cell: &Rc<SubscriptionCell>,
    rate: crate::DispatchRate,
) -> Result<(), Refusal> {
    let state = {
        let mut core = cell.core.borrow_mut();
        core.set_dispatch_rate(rate);
        core.take_cursor_if_dirty()
    };
    if let Some(state) = state {
        super::driver::store_cursor_durably(cell, &state)
            .await
            .map_err(|why| (ErrorCode::Storage, format!("the limit is not kept: {why}")))?;
    }
    cell.wake();
    Ok(())
}
