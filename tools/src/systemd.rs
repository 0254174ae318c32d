//! The broker as a systemd service (`Type=notify`, `deploy/systemd/oxbow.service`): READY=1
//! once every listener is bound, RELOADING=1 and READY=1 around a certificate reload,
//! STOPPING=1 when a shutdown signal arrives, and WATCHDOG=1 for as long as every shard
//! answers. Outside systemd (no NOTIFY_SOCKET) every call does nothing.

use oxbow_net::runtime::ShardLiveness;
use sd_notify::NotifyState;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tells the service manager of a state change. A failure is logged, never fatal: the broker
/// serves whether or not its manager hears it.
fn tell(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "telling systemd");
    }
}

/// Startup is done: every listener is bound and every partition recovered.
pub fn ready(status: &str) {
    tell(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (of the listeners' certificates) begins; [`ready`] ends it.
pub fn reloading() {
    tell(&[NotifyState::Reloading]);
}

/// Shutdown begins: leadership handover and the shards' final syncs may take a while.
pub fn stopping() {
    tell(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pings the service manager's watchdog (the unit's `WatchdogSec=`) every quarter period, each
/// time only once every shard has answered within that quarter: a shard stuck in a loop or a
/// blocked system call goes a whole period without a ping, and systemd restarts the broker.
/// Stops when dropped.
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts pinging when the service manager asked for a watchdog; otherwise `None`.
    pub fn start(liveness: ShardLiveness) -> Option<Watchdog> {
        let mut usec = 0;
        if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
            return None;
        }
        let tick = Duration::from_micros(usec) / 4;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                let started = Instant::now();
                if liveness.all_answer_within(tick) {
                    tell(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(?tick, "a shard did not answer in time: no watchdog ping");
                }
                let rest = tick.saturating_sub(started.elapsed());
                if stopped.recv_timeout(rest) != Err(mpsc::RecvTimeoutError::Timeout) {
                    return;
                }
            });
        match thread {
            Ok(thread) => Some(Watchdog {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(e) => {
                tracing::error!(error = %e, "starting the watchdog thread");
                None
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
