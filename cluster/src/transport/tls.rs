//! Who may talk to a node: mutual TLS with one cluster certificate. The first node generates a
//! cluster CA and a certificate it signs (`ca.pem`, `cluster.pem`, `cluster.key`); the other
//! nodes get copies of those files, or every node is given files made elsewhere. A peer must
//! present a certificate the cluster CA signed, in both directions; anything else is refused
//! during the handshake.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name every cluster certificate carries and every node asks for.
pub const CLUSTER_SERVER_NAME: &str = "oxbow-cluster";
/// The application protocol spoken on cluster connections.
const ALPN: &[u8] = b"oxbow-cluster/1";

/// Why the cluster's TLS material cannot be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file cannot be read or written.
    #[error("{path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path:?}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Generating or configuring failed.
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The cluster CA's certificate and this node's certificate and key, PEM.
#[derive(Clone)]
pub struct ClusterTls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl ClusterTls {
    /// A new cluster: a CA, and a cluster certificate it signs. The CA's key is not kept, so
    /// nothing else can be signed with it: every node uses the same cluster certificate.
    pub fn generate() -> Result<ClusterTls, TlsError> {
        let setup = |e: rcgen::Error| TlsError::Setup(e.to_string());
        let ca_key = rcgen::KeyPair::generate().map_err(setup)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).map_err(setup)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (ca_params.distinguished_name).push(rcgen::DnType::CommonName, "oxbow cluster CA");
        let ca = ca_params.self_signed(&ca_key).map_err(setup)?;
        let key = rcgen::KeyPair::generate().map_err(setup)?;
        let params =
            rcgen::CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string()]).map_err(setup)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(setup)?;
        Ok(ClusterTls {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The files in `dir`: `ca.pem`, `cluster.pem`, `cluster.key`.
    pub fn read(dir: &Path) -> Result<ClusterTls, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Io { path, source })
        };
        Ok(ClusterTls {
            ca_pem: read("ca.pem")?,
            cert_pem: read("cluster.pem")?,
            key_pem: read("cluster.key")?,
        })
    }

    /// Writes the files to `dir` (the key readable by the owner only).
    pub fn write(&self, dir: &Path) -> Result<(), TlsError> {
        let io = |path: PathBuf| move |source| TlsError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        // The key first and readable by the owner only from its creation; `ca.pem` last, as
        // the mark that the set is whole.
        for (name, text, mode) in [
            ("cluster.key", &self.key_pem, 0o600),
            ("cluster.pem", &self.cert_pem, 0o644),
            ("ca.pem", &self.ca_pem, 0o644),
        ] {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let path = dir.join(name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)
                .map_err(io(path.clone()))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io(path.clone()))?;
        }
        Ok(())
    }

    /// The files in `dir`, generated there first if there are none (the first node).
    pub fn read_or_generate(dir: &Path) -> Result<ClusterTls, TlsError> {
        // `ca.pem` is written last: without it, whatever is there is an interrupted attempt.
        if dir.join("ca.pem").exists() {
            return ClusterTls::read(dir);
        }
        let tls = ClusterTls::generate()?;
        tls.write(dir)?;
        tracing::info!(
            ?dir,
            "cluster CA and certificate generated: copy this directory to every other node"
        );
        Ok(tls)
    }

    fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
        match certs {
            Ok(certs) if !certs.is_empty() => Ok(certs),
            Ok(_) => Err(invalid(what, "no certificate")),
            Err(e) => Err(invalid(what, &e.to_string())),
        }
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        match rustls_pemfile::private_key(&mut self.key_pem.as_bytes()) {
            Ok(Some(key)) => Ok(key),
            Ok(None) => Err(invalid("cluster.key", "no private key")),
            Err(e) => Err(invalid("cluster.key", &e.to_string())),
        }
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in ClusterTls::certs(&self.ca_pem, "ca.pem")? {
            roots
                .add(cert)
                .map_err(|e| invalid("ca.pem", &e.to_string()))?;
        }
        Ok(Arc::new(roots))
    }

    /// The QUIC server side: TLS 1.3, a client certificate signed by the cluster CA required.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                ClusterTls::certs(&self.cert_pem, "cluster.pem")?,
                self.key()?,
            )
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
    }

    /// The QUIC client side: the peer's certificate must be signed by the cluster CA for
    /// [`CLUSTER_SERVER_NAME`]; this node presents the cluster certificate.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(
                ClusterTls::certs(&self.cert_pem, "cluster.pem")?,
                self.key()?,
            )
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }
}

fn invalid(file: &str, reason: &str) -> TlsError {
    TlsError::Invalid {
        path: PathBuf::from(file),
        reason: reason.to_string(),
    }
}
