//! Test certificates made at run time (rcgen), and the addresses of named listeners.

use super::{field, Broker};
use std::path::{Path, PathBuf};

/// A test CA, a server certificate it signs for 127.0.0.1, a client certificate for mutual
/// TLS, one the CA signed but that expired in 2021, and a second CA nobody trusts.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub expired_client_cert: PathBuf,
    pub expired_client_key: PathBuf,
    pub stranger_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (params.distinguished_name).push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

pub fn pki(dir: &Path) -> Pki {
    let (ca_cert, ca_key) = ca("oxbow test CA");
    let issue = |names: Vec<String>, usage, cn: &str, expired: bool| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        (params.distinguished_name).push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let signed = |names, usage, cn: &str| issue(names, usage, cn, false);
    let server = signed(
        vec!["127.0.0.1".into(), "localhost".into()],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        "oxbow",
    );
    let client = signed(
        Vec::new(),
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        "client",
    );
    let expired = issue(
        Vec::new(),
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        "client",
        true,
    );
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server.0),
        server_key: write("server.key", &server.1),
        client_cert: write("client.pem", &client.0),
        client_key: write("client.key", &client.1),
        expired_client_cert: write("expired-client.pem", &expired.0),
        expired_client_key: write("expired-client.key", &expired.1),
        stranger_ca: write("stranger-ca.pem", &ca("nobody's CA").0.pem()),
    }
}

/// The address listener `name` was bound to, from its log line.
pub fn kafka_listener(broker: &Broker, name: &str) -> String {
    bound(broker, "Kafka", name)
}

/// The address native listener `name` was bound to, from its log line.
pub fn native_listener(broker: &Broker, name: &str) -> String {
    bound(broker, "native", name)
}

fn bound(broker: &Broker, protocol: &str, name: &str) -> String {
    let line = (broker.seen.iter())
        .find(|l| {
            l.contains(&format!("{protocol} listener bound"))
                && l.contains(&format!("listener={name} "))
        })
        .unwrap_or_else(|| panic!("no listener {name} in the log"));
    field(line, "addr")
}
