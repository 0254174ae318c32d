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

/// One shard's count of failures by address.
#[derive(Default)]
pub struct FailedLogins {
    by_address: RefCell<HashMap<IpAddr, Window>>,
}

fn of(shard: &Shard) -> Rc<FailedLogins> {
    if let Some(logins) = shard.extension::<FailedLogins>() {
        return logins;
    }
    let logins = Rc::new(FailedLogins::default());
    shard.set_extension(logins.clone());
    logins
}

/// Counts a failed authentication (TLS handshake or SASL) from `peer`.
pub fn record(shard: &Shard, peer: Option<SocketAddr>) {
    crate::metrics::of(shard).authentication_failed();
    let Some(peer) = peer else { return };
    let window = Duration::from_millis(shard.config.authentication.failure_window_ms);
    let logins = of(shard);
    let mut by_address = logins.by_address.borrow_mut();
    let now = Instant::now();
    if by_address.len() >= ADDRESSES_MAX && !by_address.contains_key(&peer.ip()) {
        by_address.retain(|_, w| now.duration_since(w.started) < window);
        if by_address.len() >= ADDRESSES_MAX {
            let oldest = (by_address.iter())
                .min_by_key(|(_, w)| w.started)
                .map(|(ip, _)| *ip);
            by_address.remove(&oldest.expect("the map is full"));
        }
    }
    let entry = by_address.entry(peer.ip()).or_insert(Window {
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

/// Whether connections from `peer` are refused for now; a refusal is counted.
pub fn throttled(shard: &Shard, peer: Option<SocketAddr>) -> bool {
    let Some(peer) = peer else { return false };
    let config = &shard.config.authentication;
    let window = Duration::from_millis(config.failure_window_ms);
    let logins = of(shard);
    let by_address = logins.by_address.borrow();
    let throttled = (by_address.get(&peer.ip())).is_some_and(|w| {
        w.failures >= config.failures_per_address_max && w.started.elapsed() < window
    });
    if throttled {
        crate::metrics::of(shard).authentication_throttled();
        tracing::debug!(
            ?peer,
            "too many failed authentications: connection closed at accept"
        );
    }
    throttled
}
