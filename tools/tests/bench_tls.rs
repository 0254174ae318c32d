//! `oxbow bench --tls-ca` against a broker's SSL listener: every message is acknowledged as
//! over plaintext, and a run that forgets TLS, or trusts the wrong CA, fails in bounded time
//! with an error that says so instead of hanging.

mod common;

use common::pki::{kafka_listener, pki, Pki};
use common::Broker;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Far above what a refused run takes (well under a second); only a bound on a hang.
const REFUSAL_LIMIT: Duration = Duration::from_secs(30);

/// A broker with a plaintext listener and an SSL one whose certificate (for 127.0.0.1) the
/// test CA signs; returns it, the two addresses and the certificates.
fn start(dir: &Path) -> (Broker, String, String, Pki) {
    let pki = pki(dir);
    let toml = format!(
        "[[kafka_listeners]]\nname = \"INTERNAL\"\naddress = \"127.0.0.1:0\"\n\
         [[kafka_listeners]]\naddress = \"127.0.0.1:0\"\nsecurity = \"SSL\"\n\
         tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        pki.server_cert, pki.server_key
    );
    let (broker, _) = common::start_configured(dir, &toml);
    let (plain, ssl) = (
        kafka_listener(&broker, "INTERNAL"),
        kafka_listener(&broker, "SSL"),
    );
    (broker, plain, ssl, pki)
}

/// `oxbow bench --protocol kafka --workload produce` of 2,000 1 KiB messages with `extra`
/// flags; killed (and the test failed) if it outlives `limit`.
fn bench(broker: &str, extra: &[&str], limit: Duration) -> Output {
    let common = "bench --protocol kafka --workload produce --messages 2000 --message-size 1024 \
                  --duration 30s --warmup 0s --quiet --broker";
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxbow"))
        .args(common.split_whitespace())
        .arg(broker)
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
    let (mut broker, plain, ssl, pki) = start(dir.path());
    let json = dir.path().join("tls.json");
    let ca = pki.ca.to_str().unwrap();
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
    // Every connection ended with a close_notify, not a truncated stream.
    let log = broker.log_so_far();
    assert!(!log.contains("close_notify"), "{log}");

    // The right CA but another name, a CA that did not sign, and no TLS at all.
    let refusals: [(&[&str], &str); 3] = [
        (
            &["--tls-ca", ca, "--tls-server-name", "elsewhere.example"],
            "TLS handshake with",
        ),
        (
            &["--tls-ca", pki.stranger_ca.to_str().unwrap()],
            "invalid peer certificate",
        ),
        (&[], "is this an SSL listener?"),
    ];
    for (flags, expected) in refusals {
        let started = Instant::now();
        let out = bench(&ssl, flags, REFUSAL_LIMIT);
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
