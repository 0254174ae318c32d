//! A consumer attaching again after it lost a leader's connection (or was told its
//! partition's leader moved): fresh metadata, new connections, Subscribe under its name and a
//! new id, with backoff, until its reconnect timeout.

use crate::acker::Attached;
use crate::connection::ConsumerEvent;
use crate::consumer::ConsumerBuilder;
use crate::error::ClientError;
use oxbow_core::native::ErrorCode;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// A consumer's attachment in the making, after a lost connection.
pub(crate) type Reattaching =
    Pin<Box<dyn Future<Output = Result<(Attached, u32), ClientError>> + Send>>;

/// Attaches `spec` again after a lost connection: detaches what is left of `old`, then
/// looks the leaders up and attaches under a new id, until that works, a refusal no retry
/// can change comes, or `spec.reconnect_timeout` passes. Waits the client's retry backoff
/// after the first failure, twice that after the next, up to [`RECONNECT_BACKOFF_MAX`].
pub(crate) async fn reattach(
    spec: ConsumerBuilder,
    old: Arc<Attached>,
    events: mpsc::UnboundedSender<ConsumerEvent>,
) -> Result<(Attached, u32), ClientError> {
    let _ = old.legs.close(old.consumer_id).await;
    let router = spec.client.router.clone();
    let deadline = Instant::now() + spec.reconnect_timeout;
    let mut backoff = router.backoff();
    loop {
        router.forget(&spec.topic);
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left, spec.attach_once(&router, &events, true)).await
        {
            Ok(Ok(attached)) => return Ok(attached),
            Ok(Err(e)) if !worth_retrying(&e) => return Err(e),
            Ok(Err(e)) => e,
            Err(_) => ClientError::Timeout(spec.reconnect_timeout),
        };
        let wait = backoff.next_wait();
        if Instant::now() + wait >= deadline {
            return Err(ClientError::ReconnectFailed {
                after: spec.reconnect_timeout,
                last: Box::new(error),
            });
        }
        tracing::debug!(topic = %spec.topic, %error, ?wait, "attaching again failed");
        tokio::time::sleep(wait).await;
    }
}

/// Whether attaching again may work later: the broker is away, restarting or between
/// leaders, or the consumer's stale session still holds its place. Refused credentials,
/// authorization, a deleted topic or a bad setting will not change by retrying.
fn worth_retrying(error: &ClientError) -> bool {
    match error {
        ClientError::Io(_)
        | ClientError::Closed
        | ClientError::Timeout(_)
        | ClientError::Protocol(_) => true,
        ClientError::Refused { code, .. } => matches!(
            code,
            ErrorCode::NotLeader
                | ErrorCode::ConsumerBusy
                | ErrorCode::Storage
                | ErrorCode::LimitReached
                | ErrorCode::TimedOut
        ),
        _ => false,
    }
}
