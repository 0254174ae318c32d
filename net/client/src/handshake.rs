//! The start of every native connection, before its reader and writer tasks exist: the
//! version handshake (`Connect` / `Connected`), then, when credentials are configured, the SASL
//! exchange of [`crate::auth`]. Each runs within the request timeout; every frame the broker
//! sends here is checked, and anything unexpected is an error, never a panic.

use crate::auth::{SaslCredentials, SaslExchange, Step};
use crate::error::ClientError;
use bytes::BytesMut;
use oxbow_core::native::{decode_frame, encode_frame, ClientFrame, ServerFrame, PROTOCOL_VERSION};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted before the connection is ready. `Connected` and SCRAM messages are
/// a few hundred bytes; the bound keeps a broker that is not one from making us buffer more.
const HANDSHAKE_FRAME_BYTES_MAX: u32 = 64 << 10;

/// What the broker said in `Connected`.
pub(crate) struct Hello {
    pub(crate) session_timeout: Duration,
    pub(crate) broker_id: i32,
}

/// Sends `Connect` with [`PROTOCOL_VERSION`] and waits for `Connected`.
pub(crate) async fn hello<R, W>(
    reader: &mut R,
    writer: &mut W,
    buffer: &mut BytesMut,
    client_name: &str,
    timeout: Duration,
) -> Result<Hello, ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exchange = async {
        let connect = ClientFrame::Connect {
            version: PROTOCOL_VERSION,
            client_name: client_name.to_string(),
        };
        send(writer, &connect).await?;
        let answer = read_frame(reader, buffer).await;
        if answer.is_err() && looks_like_tls(buffer) {
            return Err(ClientError::Protocol(
                "the broker answered with a TLS record: its listener requires TLS \
                 (configure a CA file: tls_ca_file, --tls-ca)"
                    .into(),
            ));
        }
        match answer? {
            ServerFrame::Connected {
                session_timeout_ms,
                broker_id,
                ..
            } => Ok(Hello {
                session_timeout: Duration::from_millis(session_timeout_ms),
                broker_id,
            }),
            ServerFrame::Error { code, message, .. } => Err(ClientError::refusal(code, message)),
            other => Err(ClientError::Protocol(format!(
                "expected Connected, got {}",
                frame_name(&other)
            ))),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

/// Authenticates with `credentials`: `Authenticate` / `AuthenticationStep` until the exchange
/// is done (and, with SCRAM, the broker's final signature verified).
pub(crate) async fn authenticate<R, W>(
    reader: &mut R,
    writer: &mut W,
    buffer: &mut BytesMut,
    credentials: &SaslCredentials,
    ids: &AtomicU64,
    timeout: Duration,
) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exchange = async {
        let (mut exchange, mut token) = SaslExchange::start(credentials)?;
        loop {
            let request_id = ids.fetch_add(1, Ordering::Relaxed);
            let frame = ClientFrame::Authenticate {
                request_id,
                mechanism: exchange.mechanism().name().to_string(),
                token,
            };
            send(writer, &frame).await?;
            match read_frame(reader, buffer).await? {
                ServerFrame::AuthenticationStep {
                    request_id: answered,
                    token: answer,
                    done,
                } if answered == request_id => match exchange.step(&answer, done)? {
                    Step::Send(next) => token = next,
                    Step::Done => return Ok(()),
                },
                ServerFrame::Error { code, message, .. } => {
                    return Err(ClientError::refusal(code, message))
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected AuthenticationStep for request {request_id}, got {}",
                        frame_name(&other)
                    )))
                }
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

/// Writes one frame and flushes it (TLS may hold the last records of a write otherwise).
async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &ClientFrame,
) -> Result<(), ClientError> {
    let bytes = encode_frame(frame, 0);
    let io = |e| ClientError::Io(Arc::new(e));
    writer.write_all(&bytes).await.map_err(io)?;
    writer.flush().await.map_err(io)
}

/// Reads until one whole frame is in `buffer` and returns its control part; whatever follows
/// it stays in `buffer` for the connection's reader.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
) -> Result<ServerFrame, ClientError> {
    loop {
        if let Some(frame) = decode_frame::<ServerFrame>(buffer, HANDSHAKE_FRAME_BYTES_MAX)
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            return Ok(frame.control);
        }
        let read = (reader.read_buf(buffer).await).map_err(|e| ClientError::Io(Arc::new(e)))?;
        if read == 0 {
            return Err(ClientError::Closed);
        }
    }
}

/// Whether `buffer` starts like a TLS record (an alert or a handshake, TLS 1.0 to 1.3), which a
/// TLS listener sends a client that spoke plaintext to it.
fn looks_like_tls(buffer: &[u8]) -> bool {
    matches!(buffer, [0x15 | 0x16, 0x03, 0x01..=0x04, ..])
}

/// A frame's kind, for errors: SASL tokens are not printed.
fn frame_name(frame: &ServerFrame) -> String {
    let debug = format!("{frame:?}");
    let end = debug.find([' ', '{', '(']).unwrap_or(debug.len());
    debug[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_recognised() {
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x00]));
        assert!(!looks_like_tls(&[0x00, 0x00, 0x00, 0x40]));
        assert!(!looks_like_tls(&[0x15]));
    }
}
