//! TLS for Kafka connections (`--tls-ca`, of the bench and the Kafka-side commands): the client
//! configuration, made once from the CA file while the flags are checked, and the byte stream
//! a connection runs over.
//!
//! A [`Stream`] is plain TCP or TLS over TCP. The plaintext variant stays a bare `TcpStream`
//! split into owned halves (no lock between a producer's writer and its answer reader), so
//! a run without TLS costs what it did before; the TLS variant splits through tokio's lock.
//! Whoever writes must `flush` after `write_all`: rustls may keep the last records of a write
//! in its buffer when the socket is full, and `write_all` returns once rustls has the bytes.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// How long a TLS handshake may take before the connection is given up.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings of a run: the CA to trust and the name the broker's certificate must
/// carry (by default the host of the address connected to). Made by [`Tls::load`] before
/// anything connects; shared by every connection.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tls {
    pub ca: PathBuf,
    pub server_name: Option<String>,
    #[serde(skip)]
    name: Option<ServerName<'static>>,
    #[serde(skip)]
    config: Arc<ClientConfig>,
}

impl Tls {
    /// Reads the CA certificates (PEM) in `ca` and checks `server_name`; errors name the flag.
    pub fn load(ca: &Path, server_name: Option<&str>) -> Result<Tls, String> {
        let bad = |e: &dyn std::fmt::Display| format!("--tls-ca {ca:?}: {e}");
        let pem = std::fs::read(ca).map_err(|e| bad(&e))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        if roots.is_empty() {
            return Err(bad(&"no PEM certificate in it"));
        }
        let name = server_name.map(certificate_name).transpose()?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("setting up TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            ca: ca.to_path_buf(),
            server_name: server_name.map(str::to_string),
            name,
            config: Arc::new(config),
        })
    }
}

fn certificate_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("--tls-server-name {name:?}: not a DNS name or an IP address"))
}

/// The host part of a `host:port` address (`[::1]:9092` gives `::1`), the default name the
/// broker's certificate is checked against.
pub fn host(address: &str) -> &str {
    if let Some(bracketed) = address.strip_prefix('[') {
        return bracketed
            .split_once(']')
            .map_or(bracketed, |(host, _)| host);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    }
}

/// A byte stream, or one of its halves, in its plain or its TLS variant.
pub enum Link<P, T> {
    Plain(P),
    Tls(T),
}

type TlsTcp = Box<TlsStream<TcpStream>>;
/// A connection to a Kafka listener.
pub type Stream = Link<TcpStream, TlsTcp>;
/// What a producer's answer task reads from.
pub type ReadHalf = Link<OwnedReadHalf, tokio::io::ReadHalf<TlsTcp>>;
/// What a producer writes requests to.
pub type WriteHalf = Link<OwnedWriteHalf, tokio::io::WriteHalf<TlsTcp>>;

/// Connects to `addr`, then shakes hands over TLS when `tls` is given.
pub async fn connect(addr: &str, tls: Option<&Tls>) -> Result<Stream, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to the Kafka listener at {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let Some(tls) = tls else {
        return Ok(Link::Plain(tcp));
    };
    let name = match &tls.name {
        Some(name) => name.clone(),
        None => certificate_name(host(addr))?,
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let handshake = connector.connect(name.clone(), tcp);
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => Ok(Link::Tls(Box::new(stream))),
        Ok(Err(e)) => Err(format!(
            "TLS handshake with {addr} (certificate name {}): {e}",
            name.to_str()
        )),
        Err(_) => Err(format!(
            "TLS handshake with {addr}: no answer within {TLS_HANDSHAKE_TIMEOUT:?} \
             (is it a TLS listener?)"
        )),
    }
}

impl Stream {
    /// Separate halves for a writer and a reader task.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Link::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                (Link::Plain(read), Link::Plain(write))
            }
            Link::Tls(tls) => {
                let (read, write) = tokio::io::split(tls);
                (Link::Tls(read), Link::Tls(write))
            }
        }
    }
}

impl<P: AsyncRead + Unpin, T: AsyncRead + Unpin> AsyncRead for Link<P, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Link::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<P: AsyncWrite + Unpin, T: AsyncWrite + Unpin> AsyncWrite for Link<P, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Link::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Link::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Link::Plain(s) => s.is_write_vectored(),
            Link::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_flush(cx),
            Link::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Link::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_certificate_name_is_the_host_of_the_broker_address() {
        assert_eq!(host("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host("broker.example:9093"), "broker.example");
        assert_eq!(host("[::1]:9093"), "::1");
        assert_eq!(host("broker.example"), "broker.example");
    }

    #[test]
    fn a_bad_ca_file_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = Tls::load(&missing, Some("localhost")).unwrap_err();
        assert!(
            e.starts_with("--tls-ca") && e.contains("missing.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Tls::load(&empty, Some("localhost")).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
