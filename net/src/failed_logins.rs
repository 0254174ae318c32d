//! Failed authentications by source address, per shard: each failure is counted (and waited
//! out by the connection, `authentication.failure_delay_ms`); an address with
//! `authentication.failures_per_address_max` failures within `authentication.failure_window_ms`
//! has its next connections closed at accept, before any TLS or SASL work, until the window
//! passes. Guessing passwords then costs a stranger its window, not a shard its time. The
//! kernel spreads one address's connections over the shards, each of which counts its own: the
//! node's limit is at most the shard count times the setting.

use crate::shard::Shard;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Most addresses a shard remembers; past it, the oldest windows are forgotten first, so a
/// flood from many addresses costs bounded memory.
pub const ADDRESSES_MAX: usize = 4096;

/// Failures from one address in its current window.
struct Window {
    started: Instant,
    failures: u32,
}

/// Failure windows by address, at most [`ADDRESSES_MAX`] of them.
#[derive(Default)]
struct Windows(HashMap<IpAddr, Window>);

impl Windows {
    /// Counts a failure from `ip` at `now`.
    fn record(&mut self, ip: IpAddr, now: Instant, window: Duration) {
        if self.0.len() >= ADDRESSES_MAX && !self.0.contains_key(&ip) {
            self.0.retain(|_, w| now.duration_since(w.started) < window);
            if self.0.len() >= ADDRESSES_MAX {
                let oldest = (self.0.iter())
                    .min_by_key(|(_, w)| w.started)
                    .map(|(ip, _)| *ip);
                self.0.remove(&oldest.expect("the map is full"));
            }
        }
        let entry = self.0.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(entry.started) >= window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures += 1;
    }

    /// Whether `ip` has had `max` failures in a window still open at `now`.
    fn throttled(&self, ip: IpAddr, now: Instant, window: Duration, max: u32) -> bool {
        (self.0.get(&ip))
            .is_some_and(|w| w.failures >= max && now.duration_since(w.started) < window)
    }
}

/// One shard's count of failures by address.
#[derive(Default)]
pub struct FailedLogins {
    windows: RefCell<Windows>,
}

fn of(shard: &Shard) -> Rc<FailedLogins> {
    shard.extension_or_insert_with(FailedLogins::default)
}

/// Counts a failed authentication (TLS handshake or SASL) from `peer`.
pub fn record(shard: &Shard, peer: Option<SocketAddr>) {
    crate::metrics::of(shard).authentication_failed();
    let Some(peer) = peer else { return };
    let window = Duration::from_millis(shard.config.authentication.failure_window_ms);
    (of(shard).windows.borrow_mut()).record(peer.ip(), Instant::now(), window);
}

/// Whether connections from `peer` are refused for now; a refusal is counted.
pub fn throttled(shard: &Shard, peer: Option<SocketAddr>) -> bool {
    let Some(peer) = peer else { return false };
    let config = &shard.config.authentication;
    let window = Duration::from_millis(config.failure_window_ms);
    let max = config.failures_per_address_max;
    let throttled = (of(shard).windows.borrow()).throttled(peer.ip(), Instant::now(), window, max);
    if throttled {
        crate::metrics::of(shard).authentication_throttled();
        tracing::debug!(
            ?peer,
            "too many failed authentications: connection closed at accept"
        );
    }
    throttled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_within_its_window_and_memory_stays_bounded() {
        let (start, window) = (Instant::now(), Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut windows = Windows::default();
        for _ in 0..3 {
            windows.record(ip, start, window);
        }
        assert!(windows.throttled(ip, start, window, 3));
        assert!(!windows.throttled(ip, start, window, 4));
        assert!(
            !windows.throttled(ip, start + window, window, 3),
            "the window ended"
        );
        windows.record(ip, start + window, window);
        assert!(
            !windows.throttled(ip, start + window, window, 2),
            "a new window"
        );
        // A flood from many addresses: bounded, the oldest forgotten first.
        for n in 0..(ADDRESSES_MAX as u32 + 100) {
            let other = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + n));
            windows.record(
                other,
                start + window + Duration::from_millis(n as u64),
                window,
            );
        }
        assert_eq!(windows.0.len(), ADDRESSES_MAX);
        assert!(!windows.0.contains_key(&ip));
    }
}
