//! TLS for client listeners: the server configuration of a listener, made once from its PEM
//! files (certificate chain, private key and, for mutual TLS, the CA that client certificates
//! must chain to). The handshake and the records run over the connection's byte stream on its
//! own shard (futures-rustls over glommio's socket); TLS 1.2 and 1.3 only, as rustls offers.
//! SIGHUP reads the files again: new connections get the new certificate, open ones keep
//! the session they have.

use crate::pacer::Pacer;
use oxbow_core::config::ListenerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The TLS handshake of an accepted connection, within `authentication.timeout_ms`, once the
/// shard's handshake schedule gives it a turn (else it is dropped, counted as throttled); with
/// a client certificate (mutual TLS), `session` takes the principal it names. A failure is
/// counted against the client's address and logged; the connection is then dropped.
pub async fn accept<IO>(
    shard: &crate::shard::Shard,
    tls: &ReloadableTls,
    stream: IO,
    session: &mut crate::session::Session,
) -> Option<futures_rustls::server::TlsStream<IO>>
where
    IO: futures_lite::io::AsyncRead + futures_lite::io::AsyncWrite + Unpin,
{
    let limit = std::time::Duration::from_millis(shard.config.authentication.timeout_ms);
    let per_second = shard.config.authentication.tls_handshakes_per_second_max;
    let handshakes = shard.extension_or_insert_with(|| Handshakes(Pacer::new(per_second)));
    if !handshakes.0.turn(shard, limit).await {
        tracing::debug!(peer = ?session.peer, listener = %tls.listener(),
            "TLS handshake throttled: closed at accept");
        return None;
    }
    let acceptor = futures_rustls::TlsAcceptor::from(tls.current());
    match crate::session::within(limit, acceptor.accept(stream)).await {
        Ok(stream) => {
            if let Some(principal) = client_principal(&stream) {
                session.principal = principal;
            }
            Some(stream)
        }
        Err(e) => {
            crate::failed_logins::record(shard, session.peer);
            tracing::warn!(peer = ?session.peer, listener = %tls.listener(), error = %e,
                "TLS handshake failed");
            None
        }
    }
}

/// This shard's schedule of TLS handshakes: a flood of them, from as many addresses as it
/// takes to stay under `authentication.failures_per_address_max`, costs a key exchange and a
/// signature each, so a shard starts at most `authentication.tls_handshakes_per_second_max`.
struct Handshakes(Pacer);

/// The principal a verified client certificate names (mutual TLS): `User:` and its subject,
/// as Kafka's default `ssl.principal.mapping.rules` make it.
fn client_principal<IO>(
    stream: &futures_rustls::server::TlsStream<IO>,
) -> Option<crate::session::Principal> {
    let chain = stream.get_ref().1.peer_certificates()?;
    let name = crate::certificate_name::subject_name(chain.first()?)?;
    Some(crate::session::Principal::User(name))
}

/// A listener's TLS configuration, which can be made again from its files while the
/// listener runs.
#[derive(Debug)]
pub struct ReloadableTls {
    listener: ListenerConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadableTls {
    /// Made from `listener`'s files.
    pub fn new(listener: &ListenerConfig) -> Result<ReloadableTls, TlsSetupError> {
        Ok(ReloadableTls {
            current: RwLock::new(server_config(listener)?),
            listener: listener.clone(),
        })
    }

    /// The configuration a new connection's handshake uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a whole configuration: the writer only swaps an Arc.
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.clone()
    }

    /// Reads the files again; on an error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        let fresh = server_config(&self.listener)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The listener's name.
    pub fn listener(&self) -> &str {
        self.listener.name()
    }
}

/// Why a listener's TLS cannot be set up (reported at start, naming the file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A file cannot be read.
    #[error("{path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key, or they do not go together.
    #[error("{path:?}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(path)?;
    let certs: Vec<_> = (rustls_pemfile::certs(&mut pem.as_slice()))
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(path, e))?;
    if certs.is_empty() {
        return Err(invalid(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read(path)?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(invalid(path, "no PEM private key in it")),
        Err(e) => Err(invalid(path, e)),
    }
}

/// The TLS server configuration of `listener` (which must have its certificate and key).
fn server_config(listener: &ListenerConfig) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let (Some(cert_file), Some(key_file)) = (&listener.tls_cert_file, &listener.tls_key_file)
    else {
        let path = PathBuf::from(listener.name());
        return Err(invalid(
            &path,
            "the listener has no tls_cert_file or tls_key_file",
        ));
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert_file, e))?;
    let builder = match &listener.tls_client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(ca_file)? {
                roots.add(ca).map_err(|e| invalid(ca_file, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(ca_file, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certificates(cert_file)?, private_key(key_file)?)
        .map_err(|e| invalid(key_file, format!("does not go with {cert_file:?}: {e}")))?;
    Ok(Arc::new(config))
}
