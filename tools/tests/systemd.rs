//! The broker under a service manager's notify protocol, which `Type=notify` and
//! `WatchdogSec=` in deploy/systemd/oxbow.service rely on: this test plays systemd's side of
//! the socket (the machines CI runs on have no systemd as PID 1).

mod common;

use common::fixed_port_args;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The watchdog period the test asks for: the broker must ping within every one of them.
const WATCHDOG: Duration = Duration::from_secs(2);

/// The next notification, within `within`; panics when none comes.
fn next(socket: &UnixDatagram, within: Duration) -> String {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n =
        (socket.recv(&mut buf)).unwrap_or_else(|e| panic!("no notification in {within:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

/// Skips watchdog pings (each within its period) up to the next other notification.
fn next_besides_pings(socket: &UnixDatagram) -> String {
    loop {
        let message = next(socket, WATCHDOG);
        if message != "WATCHDOG=1" {
            return message;
        }
    }
}

#[test]
fn the_broker_tells_its_service_manager_when_it_is_ready_alive_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let (args, [kafka, native, _]) = fixed_port_args(&dir.path().join("data"));
    // systemd names the process the watchdog is for; the shell hands its pid to the broker.
    let mut broker = Command::new("sh")
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" serve "$@""#)
        .arg(env!("CARGO_BIN_EXE_oxbow"))
        .args(&args)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Ready means every listener is bound.
    let ready = next(&socket, Duration::from_secs(60));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=serving Kafka on {kafka}")),
        "{ready}"
    );
    for addr in [&kafka, &native] {
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr} not bound at READY=1: {e}"));
    }

    // Alive: a ping within every watchdog period, for several periods.
    for _ in 0..4 {
        assert_eq!(next(&socket, WATCHDOG), "WATCHDOG=1");
    }

    // SIGHUP reloads the certificates, bracketed as systemd expects.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(broker.id() as i32, libc::SIGHUP) }, 0);
    assert_eq!(next_besides_pings(&socket), "RELOADING=1");
    assert!(next_besides_pings(&socket).starts_with("READY=1\n"));

    // SIGTERM: stopping, then a clean exit.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(broker.id() as i32, libc::SIGTERM) }, 0);
    let stopping = next_besides_pings(&socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(broker.wait().unwrap().success());
}
