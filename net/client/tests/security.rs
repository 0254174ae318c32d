//! The client against a stand-in broker over real sockets: TLS with a test CA (certificates
//! for an IP address and for a DNS name), SCRAM and PLAIN authentication, and every way
//! they fail, each with the error that says so. The broker side is core's `ScramServer`
//! behind a few lines of frame handling; the real broker is tested in
//! `tools/tests/native_security.rs`.

use bytes::BytesMut;
use oxbow_client::{Client, ClientBuilder, ClientError, SaslMechanism};
use oxbow_core::auth::{parse_plain, Mechanism, ScramCredential, ScramServer};
use oxbow_core::native::{
    decode_frame, encode_frame, ClientFrame, ErrorCode, ServerFrame, TopicInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const PASSWORD: &str = "correct horse";

/// How the stand-in broker behaves.
#[derive(Clone, Copy)]
enum Broker {
    /// Requires SASL and checks the password against a SCRAM credential.
    Honest,
    /// Requires SASL but does not hold the credential: it fakes the SCRAM server-final.
    Impostor,
}

/// A test CA and the PEM file holding it.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    stranger_ca_file: PathBuf,
    acceptor: TlsAcceptor,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (params.distinguished_name).push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

/// A CA, and a broker certificate it signs for `names` (IP addresses or DNS names).
fn pki(names: &[&str]) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca_cert, ca_key) = ca("oxbow client test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = (rcgen::CertificateParams::new(names).unwrap())
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let stranger_ca_file = dir.path().join("stranger.pem");
    std::fs::write(&stranger_ca_file, ca("nobody's CA").0.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    Pki {
        _dir: dir,
        ca_file,
        stranger_ca_file,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}

/// Starts a stand-in broker on 127.0.0.1 (TLS when `tls` is given); returns its address.
async fn start(tls: Option<TlsAcceptor>, behaviour: Broker) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => session(tcp, behaviour).await,
                    // A client that gives up on the certificate ends the handshake here.
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(tcp).await {
                            session(stream, behaviour).await
                        }
                    }
                }
            });
        }
    });
    addr
}

/// One connection: `Connected`, then SASL (SCRAM or PLAIN) before anything else is served.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(stream: S, behaviour: Broker) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buffer = BytesMut::new();
    let mut scram: Option<ScramServer> = None;
    let mut authenticated = false;
    let credential = |mechanism| {
        ScramCredential::from_password(mechanism, PASSWORD.as_bytes(), b"test salt", 4096).unwrap()
    };
    loop {
        let frame = loop {
            match decode_frame::<ClientFrame>(&mut buffer, 1 << 20) {
                Ok(Some(frame)) => break frame.control,
                Ok(None) => {}
                // Not the native protocol (a TLS client hello on the plaintext listener).
                Err(_) => return,
            }
            match reader.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let refuse = |request_id, message: &str| ServerFrame::Error {
            request_id,
            code: ErrorCode::AuthenticationFailed,
            message: message.to_string(),
        };
        let answer = match frame {
            ClientFrame::Connect { version, .. } => ServerFrame::Connected {
                version,
                session_timeout_ms: 30_000,
                frame_bytes_max: 1 << 20,
                broker_id: 7,
            },
            ClientFrame::Ping => ServerFrame::Pong,
            ClientFrame::Authenticate {
                request_id,
                mechanism,
                token,
            } => match (scram.take(), mechanism.as_str()) {
                (None, "PLAIN") => match parse_plain(&token) {
                    Ok(plain)
                        if plain.username == "alice"
                            && credential(Mechanism::ScramSha256)
                                .verify_password(Mechanism::ScramSha256, &plain.password) =>
                    {
                        authenticated = true;
                        ServerFrame::AuthenticationStep {
                            request_id,
                            token: Vec::new(),
                            done: true,
                        }
                    }
                    _ => refuse(request_id, "invalid credentials"),
                },
                (None, name) => {
                    let mechanism: Mechanism = name.parse().unwrap();
                    let mut server = ScramServer::new(mechanism).unwrap();
                    assert_eq!(server.client_first(&token).unwrap().username, "alice");
                    let first = server.server_first(&credential(mechanism)).unwrap();
                    scram = Some(server);
                    ServerFrame::AuthenticationStep {
                        request_id,
                        token: first,
                        done: false,
                    }
                }
                (Some(mut server), _) => match (server.client_final(&token), behaviour) {
                    (Ok(server_final), Broker::Honest) => {
                        authenticated = true;
                        ServerFrame::AuthenticationStep {
                            request_id,
                            token: server_final,
                            done: true,
                        }
                    }
                    // Accepts any proof and answers with a signature it made up.
                    (_, Broker::Impostor) => ServerFrame::AuthenticationStep {
                        request_id,
                        token: b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_vec(),
                        done: true,
                    },
                    (Err(_), Broker::Honest) => refuse(request_id, "invalid credentials"),
                },
            },
            ClientFrame::ListTopics { request_id } if authenticated => ServerFrame::Topics {
                request_id,
                topics: vec![TopicInfo {
                    name: "secured".into(),
                    partitions: 1,
                }],
            },
            _ => refuse(0, "authentication required"),
        };
        let closes = matches!(answer, ServerFrame::Error { .. });
        if writer.write_all(&encode_frame(&answer, 0)).await.is_err() {
            return;
        }
        let _ = writer.flush().await;
        if closes {
            return;
        }
    }
}

fn builder(addr: &str) -> ClientBuilder {
    Client::builder()
        .broker(addr)
        .request_timeout(Duration::from_secs(10))
}

async fn topics(builder: ClientBuilder) -> Result<Vec<String>, ClientError> {
    let client = builder.connect().await?;
    let topics = client.list_topics().await?;
    Ok(topics.into_iter().map(|t| t.name).collect())
}

#[tokio::test]
async fn scram_and_plain_over_tls_to_an_ip_address() {
    let pki = pki(&["127.0.0.1"]);
    let addr = start(Some(pki.acceptor.clone()), Broker::Honest).await;
    for mechanism in SaslMechanism::ALL {
        let secured = builder(&addr)
            .tls_ca_file(&pki.ca_file)
            .sasl(mechanism, "alice", PASSWORD);
        assert_eq!(topics(secured).await.unwrap(), ["secured"], "{mechanism}");
    }
}

#[tokio::test]
async fn the_server_name_can_differ_from_the_address() {
    let pki = pki(&["broker.oxbow.test"]);
    let addr = start(Some(pki.acceptor.clone()), Broker::Honest).await;
    let named = builder(&addr)
        .tls_ca_file(&pki.ca_file)
        .tls_server_name("broker.oxbow.test")
        .sasl(SaslMechanism::ScramSha512, "alice", PASSWORD);
    assert_eq!(topics(named).await.unwrap(), ["secured"]);
    // Without the name, the certificate is checked against 127.0.0.1, which it lacks.
    let unnamed = builder(&addr).tls_ca_file(&pki.ca_file).sasl(
        SaslMechanism::ScramSha512,
        "alice",
        PASSWORD,
    );
    let error = topics(unnamed).await.unwrap_err();
    assert!(matches!(error, ClientError::Tls(_)), "{error}");
}

#[tokio::test]
async fn tls_failures_say_so() {
    let pki = pki(&["127.0.0.1"]);
    let addr = start(Some(pki.acceptor.clone()), Broker::Honest).await;
    let stranger = builder(&addr).tls_ca_file(&pki.stranger_ca_file);
    let error = topics(stranger).await.unwrap_err();
    assert!(matches!(error, ClientError::Tls(_)), "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");

    // Plaintext to a TLS listener: rustls answers the Connect frame with an alert.
    let error = topics(builder(&addr)).await.unwrap_err();
    assert!(error.to_string().contains("requires TLS"), "{error}");

    let plaintext = start(None, Broker::Honest).await;
    let error = topics(
        builder(&plaintext)
            .tls_ca_file(&pki.ca_file)
            .request_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ClientError::Tls(_)), "{error}");

    let error = topics(builder(&addr).tls_ca_file("/nonexistent/ca.pem"))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Config(_)), "{error}");
    let error = topics(builder(&addr).tls_server_name("x.test"))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Config(_)), "{error}");
}

#[tokio::test]
async fn authentication_failures_say_so_without_the_password() {
    let pki = pki(&["127.0.0.1"]);
    let addr = start(Some(pki.acceptor.clone()), Broker::Honest).await;
    for mechanism in SaslMechanism::ALL {
        let wrong = builder(&addr)
            .tls_ca_file(&pki.ca_file)
            .sasl(mechanism, "alice", "hunter2");
        let error = topics(wrong).await.unwrap_err();
        assert!(matches!(error, ClientError::Authentication(_)), "{error}");
        assert_eq!(error.code(), Some(ErrorCode::AuthenticationFailed));
        assert!(error.to_string().contains("invalid credentials"), "{error}");
        assert!(
            !format!("{error} {error:?}").contains("hunter2"),
            "{error:?}"
        );
    }
    // A listener that requires SASL, and a client configured without it.
    let error = topics(builder(&addr).tls_ca_file(&pki.ca_file))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Authentication(_)), "{error}");

    let error = topics(builder(&addr).sasl(SaslMechanism::Plain, "", "x"))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Config(_)), "{error}");
}

#[tokio::test]
async fn a_broker_that_cannot_prove_the_credential_is_refused() {
    let addr = start(None, Broker::Impostor).await;
    let client = builder(&addr).sasl(SaslMechanism::ScramSha256, "alice", PASSWORD);
    let error = topics(client).await.unwrap_err();
    assert!(matches!(error, ClientError::Authentication(_)), "{error}");
    assert!(error.to_string().contains("signature"), "{error}");
}
