//! Authentication on native listeners that require it: after `Connected`, `Authenticate`
//! frames carry a SASL exchange ([`crate::sasl`]) until the broker answers
//! `AuthenticationStep { done: true }`. Until then only `Ping` is served; anything else, a
//! mechanism the listener does not offer, or a failed exchange gets an `AuthenticationFailed`
//! error and the connection closes (after `authentication.failure_delay_ms` for a failure).

use super::connection::Connection;
use crate::sasl::{Exchange, Step};
use oxbow_core::native::{ClientFrame, ErrorCode, ServerFrame};
use std::time::{Duration, Instant};

/// A connection's authentication, while it lasts.
pub(super) struct Authentication {
    offered: Vec<String>,
    exchange: Option<Exchange>,
    /// When the connection must be authenticated (`authentication.timeout_ms` after accept).
    deadline: Instant,
}

impl Authentication {
    pub(super) fn new(offered: Vec<String>, timeout: Duration) -> Authentication {
        Authentication {
            offered,
            exchange: None,
            deadline: Instant::now() + timeout,
        }
    }

    /// How long the client may still take.
    pub(super) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Acts on a frame that came before authentication ended; `Ok(true)` once it has.
    pub(super) async fn step(
        &mut self,
        connection: &Connection,
        frame: ClientFrame,
    ) -> Result<bool, (ErrorCode, String)> {
        let (request_id, mechanism, token) = match frame {
            ClientFrame::Ping => {
                connection.send(ServerFrame::Pong);
                return Ok(false);
            }
            ClientFrame::Authenticate {
                request_id,
                mechanism,
                token,
            } => (request_id, mechanism, token),
            _ => {
                let why = "this listener requires authentication first".to_string();
                return Err(self.failed(connection, why.clone(), why).await);
            }
        };
        let exchange = match self.exchange.take() {
            Some(exchange) => exchange,
            None if !self.offered.contains(&mechanism) => {
                let why = format!(
                    "{mechanism} is not offered; this listener offers {:?}",
                    self.offered
                );
                return Err(self.failed(connection, why.clone(), why).await);
            }
            None => match Exchange::start(&mechanism) {
                Ok(exchange) => exchange,
                Err(refusal) => {
                    return Err(self.failed(connection, refusal.said, refusal.logged).await)
                }
            },
        };
        if exchange.checks_password() && !crate::password_checks::turn(&connection.shard).await {
            tracing::warn!(peer = ?connection.session.borrow().peer, "PLAIN login throttled");
            let busy = crate::password_checks::BUSY.to_string();
            return Err((ErrorCode::LimitReached, busy));
        }
        let metadata = connection.shard.metadata();
        match exchange.step(&metadata, &token) {
            Step::Continue(next, reply) => {
                self.exchange = Some(next);
                let done = false;
                connection.send(ServerFrame::AuthenticationStep {
                    request_id,
                    token: reply,
                    done,
                });
                Ok(false)
            }
            Step::Authenticated(principal, reply) => {
                tracing::debug!(peer = ?connection.session.borrow().peer, %principal,
                    "native client authenticated");
                connection.session.borrow_mut().principal = principal;
                let done = true;
                connection.send(ServerFrame::AuthenticationStep {
                    request_id,
                    token: reply,
                    done,
                });
                Ok(true)
            }
            Step::Failed(refusal) => {
                Err(self.failed(connection, refusal.said, refusal.logged).await)
            }
        }
    }

    /// Counts and logs a failure and waits out the failure delay; returns the error to send.
    async fn failed(
        &self,
        connection: &Connection,
        said: String,
        logged: String,
    ) -> (ErrorCode, String) {
        crate::failed_logins::record(&connection.shard, connection.session.borrow().peer);
        tracing::warn!(peer = ?connection.session.borrow().peer, reason = %logged,
            "native authentication failed");
        let delay = connection.shard.config.authentication.failure_delay_ms;
        glommio::timer::sleep(Duration::from_millis(delay)).await;
        (ErrorCode::AuthenticationFailed, said)
    }
}
