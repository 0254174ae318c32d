//! What can go wrong talking to a broker.

use oxbow_core::native::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// A failed client operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket failed.
    #[error("connection failed: {0}")]
    Io(Arc<std::io::Error>),
    /// The broker refused the request (or the connection, with a connection-level error).
    #[error("broker refused: {message} ({code:?})")]
    Refused {
        /// Category.
        code: ErrorCode,
        /// The broker's words.
        message: String,
    },
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The broker detached this consumer.
    #[error("consumer closed by the broker: {0}")]
    ConsumerClosed(String),
    /// Delivery on one partition stopped in front of a batch the broker cannot decode. Not the
    /// end of the consumer: other partitions go on, and this one resumes once an operator skips
    /// the batch (`oxbow subscription skip`).
    #[error("partition {partition}: delivery stopped at offsets {base_offset}..={last_offset}: {reason}")]
    DeliveryBlocked {
        /// Partition.
        partition: u32,
        /// First offset of the batch.
        base_offset: u64,
        /// Last offset of the batch.
        last_offset: u64,
        /// What the broker could not decode.
        reason: String,
    },
    /// The broker sent something this client cannot read.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Bad configuration or arguments.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// SASL authentication failed: the broker refused the credentials (its words), or the
    /// broker's answers did not check out (a SCRAM server signature that does not verify, a
    /// message out of turn). Also what a listener that requires authentication answers a
    /// client configured without it. Never carries the password.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The TLS handshake failed: the broker's certificate does not chain to the configured CA
    /// or does not carry the server name, or the listener does not speak TLS.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// A message's key or value did not deserialize (a [`crate::TypedConsumer`]); `message`
    /// is the message as it arrived, to acknowledge or nack.
    #[error("message {} of {}-{} does not deserialize: {reason}", message.offset, message.topic, message.partition)]
    Undeserializable {
        /// What failed.
        reason: String,
        /// The message, undecoded.
        message: Box<crate::Message>,
    },
    /// A key or value did not serialize (a [`crate::TypedProducer`]); nothing was sent.
    #[error("cannot serialize: {0}")]
    Serialization(String),
    /// A consumer lost a leader's connection and could not attach again within its
    /// reconnect timeout; `last` is the last attempt's error.
    #[error("could not reconnect the consumer within {after:?}: {last}")]
    ReconnectFailed {
        /// The reconnect timeout.
        after: Duration,
        /// Why the last attempt failed.
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// The broker's error code, for a refusal (`AuthenticationFailed` for
    /// [`ClientError::Authentication`]).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            ClientError::Authentication(_) => Some(ErrorCode::AuthenticationFailed),
            _ => None,
        }
    }

    /// The error for a broker's `Error` frame: [`ClientError::Authentication`] for
    /// `AuthenticationFailed`, else [`ClientError::Refused`].
    pub(crate) fn refusal(code: ErrorCode, message: String) -> ClientError {
        match code {
            ErrorCode::AuthenticationFailed => ClientError::Authentication(message),
            code => ClientError::Refused { code, message },
        }
    }
}
