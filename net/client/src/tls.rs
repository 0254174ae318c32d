//! TLS for native connections: the rustls client configuration, made once per [`Client`] from
//! the configured CA file, and the handshake every connection of that client runs.
//!
//! Only the configured CA is trusted (no system roots): a broker's certificate must chain to
//! it and carry the server name, which is `tls_server_name` when set, else the host of the
//! address being dialled (a DNS name or an IP address; rustls checks IP SANs for the latter).
//!
//! [`Client`]: crate::Client

use crate::error::ClientError;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// What every connection of one client needs to shake hands: the trusted roots and, when
/// configured, the one server name every broker's certificate must carry.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl TlsConnector {
    /// Reads the PEM certificates in `ca_file` as the only trusted roots. Fails with
    /// [`ClientError::Config`] when the file cannot be read, holds no certificate or a bad one,
    /// or when `server_name` is neither a DNS name nor an IP address.
    pub(crate) fn load(
        ca_file: &Path,
        server_name: Option<&str>,
    ) -> Result<TlsConnector, ClientError> {
        let bad = |e: &dyn std::fmt::Display| {
            ClientError::Config(format!("tls_ca_file {}: {e}", ca_file.display()))
        };
        let pem = std::fs::read(ca_file).map_err(|e| bad(&e))?;
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        if roots.is_empty() {
            return Err(bad(&"no PEM certificate in it"));
        }
        let server_name = server_name.map(parse_server_name).transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(format!("setting up TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the TLS handshake over `tcp` (connected to `addr`), within `timeout`. A refused
    /// certificate or a peer that does not speak TLS is [`ClientError::Tls`] with rustls'
    /// reason.
    pub(crate) async fn handshake(
        &self,
        addr: &str,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, ClientError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => parse_server_name(host(addr))?,
        };
        let shown = name.to_str().into_owned();
        match tokio::time::timeout(timeout, self.connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(ClientError::Tls(format!(
                "with {addr} (server name {shown}): {e}"
            ))),
            Err(_) => Err(ClientError::Tls(format!(
                "with {addr}: no answer within {timeout:?} (is it a TLS listener?)"
            ))),
        }
    }
}

/// A DNS name or an IP address, as the broker's certificate must carry it.
pub(crate) fn parse_server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(name.to_string()).map_err(|_| {
        ClientError::Config(format!(
            "TLS server name {name:?}: not a DNS name or an IP address"
        ))
    })
}

/// The host of a `host:port` address (`[::1]:6650` gives `::1`): the default server name.
pub(crate) fn host(addr: &str) -> &str {
    if let Some(bracketed) = addr.strip_prefix('[') {
        return bracketed
            .split_once(']')
            .map_or(bracketed, |(host, _)| host);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host("broker-1.example:6650"), "broker-1.example");
        assert_eq!(host("10.0.0.7:6650"), "10.0.0.7");
        assert_eq!(host("[::1]:6650"), "::1");
        assert_eq!(host("localhost"), "localhost");
    }

    #[test]
    fn server_names_may_be_dns_names_or_ip_addresses() {
        assert!(matches!(
            parse_server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            parse_server_name("::1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            parse_server_name("broker.example"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(parse_server_name("not a name").is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_config_error() {
        let missing = TlsConnector::load(Path::new("/nonexistent/ca.pem"), None);
        assert!(matches!(missing, Err(ClientError::Config(_))));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = TlsConnector::load(&empty, None).err().unwrap();
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
    }
}
