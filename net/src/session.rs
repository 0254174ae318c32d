//! What every connection has whatever its protocol: who is on the other end (the session), and
//! a byte stream read through a buffer with deadlines kept by timers, not socket options. The
//! protocols work on any `AsyncRead + AsyncWrite` stream, so TLS can wrap the TCP stream and
//! SASL can fill in the principal without the request handlers changing.

use bytes::BytesMut;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::future::Future;
use std::io::{Error, ErrorKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Who a connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Not authenticated (Kafka's `User:ANONYMOUS`).
    Anonymous,
    /// Authenticated with SASL as this user (Kafka's `User:NAME`).
    User(String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("User:ANONYMOUS"),
            Principal::User(name) => write!(f, "User:{name}"),
        }
    }
}

/// One connection's identity, fixed when it is accepted (and, later, authenticated).
#[derive(Debug, Clone)]
pub struct Session {
    /// The client's address, if the transport has one.
    pub peer: Option<SocketAddr>,
    /// Who the client is.
    pub principal: Principal,
}

impl Session {
    /// A session of an unauthenticated client at `peer`.
    pub fn anonymous(peer: Option<SocketAddr>) -> Session {
        Session {
            peer,
            principal: Principal::Anonymous,
        }
    }

    /// The client's host as Kafka reports it in group descriptions (`/1.2.3.4`).
    pub fn client_host(&self) -> String {
        self.peer
            .map(|p| format!("/{}", p.ip()))
            .unwrap_or_default()
    }
}

/// `work`, or a `TimedOut` error once `limit` has passed.
pub async fn within<T>(
    limit: Duration,
    work: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    futures_lite::future::or(work, async move {
        glommio::timer::sleep(limit).await;
        Err(Error::new(ErrorKind::TimedOut, "timed out"))
    })
    .await
}

/// Bytes read from a stream ahead of their use: what has arrived can be looked at (to see
/// that a next request has started) without being lost.
pub struct BufferedReader<R> {
    inner: R,
    buffer: BytesMut,
    /// Where a read lands before it joins `buffer`, so a read dropped midway (a timeout, a
    /// race lost) leaves nothing behind.
    scratch: Vec<u8>,
}

/// Most bytes asked of the stream in one read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> BufferedReader<R> {
    /// Reads through `inner`.
    pub fn new(inner: R) -> BufferedReader<R> {
        BufferedReader {
            inner,
            buffer: BytesMut::new(),
            scratch: Vec::new(),
        }
    }

    /// Bytes read and not yet taken.
    pub fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// Takes the first `n` buffered bytes (`n` at most [`BufferedReader::buffered`]'s length).
    pub fn take(&mut self, n: usize) -> BytesMut {
        self.buffer.split_to(n)
    }

    /// Reads until at least `n` bytes are buffered or `deadline` passes (`TimedOut`). Returns
    /// false if the stream ended first.
    pub async fn fill_to(&mut self, n: usize, deadline: Instant) -> std::io::Result<bool> {
        // One allocation for a large request, not a doubling copy per chunk.
        self.buffer.reserve(n.saturating_sub(self.buffer.len()));
        while self.buffer.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(ErrorKind::TimedOut, "timed out"));
            }
            let want = (n - self.buffer.len()).clamp(4096, READ_CHUNK_BYTES);
            if within(left, self.read_more(want)).await? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One read of up to `want` bytes into the buffer; 0 at the end of the stream. Safe to
    /// drop before it completes: the buffer changes only once bytes have arrived.
    pub async fn read_more(&mut self, want: usize) -> std::io::Result<usize> {
        if self.scratch.len() < want {
            self.scratch.resize(want, 0);
        }
        let read = self.inner.read(&mut self.scratch[..want]).await?;
        self.buffer.extend_from_slice(&self.scratch[..read]);
        Ok(read)
    }

    /// The stream, to write to it (the reader keeps only what it buffered).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes all of `bytes` within `limit`.
pub async fn write_within<W: AsyncWrite + Unpin>(
    stream: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    within(limit, stream.write_all(bytes)).await
}
