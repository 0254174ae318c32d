//! `oxbow bench --tls-ca` against a broker's SSL listener: every message is acknowledged as
//! over plaintext, and a run that forgets TLS, or trusts the wrong CA, fails in bounded time
//! with an error that says so instead of hanging.

mod common;

use common::{field, Broker};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Far above what a refused run takes (well under a second); only a bound on a hang.
const REFUSAL_LIMIT: Duration = Duration::from_secs(30);

/// A self-signed CA called `name`, and the key pair that signs with it.
fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (params.distinguished_name).push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

/// A broker with a plaintext listener and an SSL one whose certificate (for 127.0.0.1) a
/// test CA signs; returns it, the two addresses, the CA file and a CA nobody trusts.
fn start(dir: &Path) -> (Broker, String, String, PathBuf, PathBuf) {
    let (ca_cert, ca_key) = ca("oxbow test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let server = (rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap())
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_file = write("ca.pem", ca_cert.pem());
    let stranger = write("stranger-ca.pem", ca("nobody's CA").0.pem());
    let (cert, key) = (
        write("server.pem", server.pem()),
        write("server.key", key.serialize_pem()),
    );
    let config = write(
        "oxbow.toml",
        format!(
            "[[kafka_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:0\"\n\
             [[kafka_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SSL\"\n\
             tls_cert_file = {cert:?}\ntls_key_file = {key:?}\n"
        ),
    );
    let data = dir.join("data");
    let mut broker = Broker::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    broker.wait_for("oxbow ready");
    let listener = |name: &str| {
        let line = (broker.seen.iter())
            .find(|l| {
                l.contains("Kafka listener bound") && l.contains(&format!("listener={name} "))
            })
            .unwrap_or_else(|| panic!("no listener {name} in the log"));
        field(line, "addr")
    };
    let (plain, ssl) = (listener("INTERNAL"), listener("SSL"));
    (broker, plain, ssl, ca_file, stranger)
}

/// `oxbow bench --protocol kafka --workload produce` of 2,000 1 KiB messages with `extra`
/// flags; killed (and the test failed) if it outlives `limit`.
fn bench(broker: &str, extra: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(["bench", "--protocol", "kafka", "--workload", "produce"])
        .args([
            "--broker",
            broker,
            "--messages",
            "2000",
            "--message-size",
            "1024",
        ])
        .args(["--duration", "30s", "--warmup", "0s", "--quiet"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "oxbow bench {extra:?} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn bench_over_tls_is_acknowledged_and_a_run_without_tls_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, plain, ssl, ca, stranger) = start(dir.path());
    let json = dir.path().join("tls.json");
    let ca = ca.to_str().unwrap();
    let out = bench(
        &ssl,
        &["--tls-ca", ca, "--json", json.to_str().unwrap()],
        Duration::from_secs(120),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("over TLS"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["produced"]["messages"], 2000.0, "{report:#}");
    assert_eq!(report["publish_latency_ms"]["count"], 2000.0, "{report:#}");
    assert_eq!(report["configuration"]["tls"]["ca"], ca, "{report:#}");

    // The same CA named for another host, a CA that did not sign, and no TLS at all.
    let refusals: [(&str, &[&str], &str); 3] = [
        (
            &ssl,
            &["--tls-ca", ca, "--tls-server-name", "elsewhere.example"],
            "TLS handshake",
        ),
        (
            &ssl,
            &["--tls-ca", stranger.to_str().unwrap()],
            "TLS handshake",
        ),
        (&ssl, &[], "Kafka"),
    ];
    for (broker, flags, expected) in refusals {
        let started = Instant::now();
        let out = bench(broker, flags, REFUSAL_LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} succeeded");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
        eprintln!("{flags:?} refused in {:?}: {stderr}", started.elapsed());
    }

    // The plaintext listener still serves a plaintext run; TLS to it fails in bounded time.
    assert!(bench(&plain, &[], Duration::from_secs(120))
        .status
        .success());
    let out = bench(&plain, &["--tls-ca", ca], REFUSAL_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("TLS handshake"),
        "{stderr}"
    );
}
