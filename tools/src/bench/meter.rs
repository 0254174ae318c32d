//! What workers record while the load runs: counters and latency histograms, shared by every
//! producer and consumer thread and emptied once a second by the collector.
//!
//! Every payload starts with a stamp: a marker and the wall-clock time the message was *meant*
//! to be sent (under a fixed rate, its slot in the schedule, not the moment the client got to
//! it). Latency is measured from that time, so a stall anywhere (broker, network, or the bench's
//! own client falling behind) shows in the percentiles instead of silently lowering the rate:
//! the correction for coordinated omission that wrk2 made standard. Wall-clock time lets a
//! consumer in another process on the same host read the stamp.
//!
//! The stamp also decides what the report counts: only messages *sent* inside the measured
//! window, acknowledged or delivered whenever that happens. A consumer that falls behind
//! therefore cannot inflate its count with the warm-up's backlog, and its delivery of the
//! window's messages is timed to the last one (see [`Window`]).

use super::plan::STAMP_BYTES;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// First 8 bytes of every bench payload.
const MARKER: &[u8; 8] = b"OXBENCH1";
/// Histograms count microseconds, from 1 µs to 10 minutes, at 3 significant digits.
pub const LATENCY_MAX_US: u64 = 600_000_000;

/// Wall-clock nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Writes the stamp into the first [`STAMP_BYTES`] of `payload`.
pub fn stamp(payload: &mut [u8], intended_ns: u64) {
    payload[..8].copy_from_slice(MARKER);
    payload[8..STAMP_BYTES].copy_from_slice(&intended_ns.to_le_bytes());
}

/// The intended send time of a bench payload; `None` for anything else.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    if payload.len() < STAMP_BYTES || &payload[..8] != MARKER {
        return None;
    }
    Some(u64::from_le_bytes(payload[8..STAMP_BYTES].try_into().ok()?))
}

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Counters since the last collection, and since the start.
#[derive(Default)]
pub struct Counter {
    interval: AtomicU64,
    bytes: AtomicU64,
    total: AtomicU64,
    last_ns: AtomicU64,
}

impl Counter {
    pub fn add(&self, messages: u64, bytes: u64) {
        self.interval.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.total.fetch_add(messages, Ordering::AcqRel);
        self.last_ns.fetch_max(now_ns(), Ordering::AcqRel);
    }

    /// Messages since the start of the run (warm-up included).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }

    /// Wall-clock time of the last event.
    pub fn last_ns(&self) -> u64 {
        self.last_ns.load(Ordering::Acquire)
    }

    /// (messages, bytes) since the previous call.
    fn take(&self) -> (u64, u64) {
        (
            self.interval.swap(0, Ordering::AcqRel),
            self.bytes.swap(0, Ordering::AcqRel),
        )
    }
}

/// Which messages the report counts: those sent in `[from_ns, until_ns)` by their stamp, or,
/// for a consume-only run of messages sent by someone else, those received in it.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from_ns: u64,
    pub until_ns: u64,
    pub by: Membership,
}

/// How a message is placed in (or out of) the [`Window`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    SendTime,
    Arrival,
}

impl Window {
    fn holds(&self, ns: u64) -> bool {
        (self.from_ns..self.until_ns).contains(&ns)
    }

    /// Whether a message stamped `stamp` (if it carries one) and received `now_ns` counts.
    fn counts(&self, stamp: Option<u64>, now_ns: u64) -> bool {
        match self.by {
            Membership::SendTime => stamp.is_some_and(|sent| self.holds(sent)),
            Membership::Arrival => self.holds(now_ns),
        }
    }
}

/// The messages of the window: how many, their bytes, and when the last one arrived.
#[derive(Default)]
pub struct Tally {
    messages: AtomicU64,
    bytes: AtomicU64,
    last_ns: AtomicU64,
}

impl Tally {
    fn add(&self, messages: u64, bytes: u64, at_ns: u64) {
        if messages > 0 {
            self.messages.fetch_add(messages, Ordering::AcqRel);
            self.bytes.fetch_add(bytes, Ordering::AcqRel);
            self.last_ns.fetch_max(at_ns, Ordering::AcqRel);
        }
    }

    /// (messages, bytes, wall-clock time the last one arrived).
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.messages.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
            self.last_ns.load(Ordering::Acquire),
        )
    }
}

/// Everything the workers share.
pub struct Meter {
    /// Every message, for progress lines and for knowing when consumers have everything.
    pub produced: Counter,
    pub consumed: Counter,
    /// The window's messages, for the report.
    pub produced_in_window: Tally,
    pub consumed_in_window: Tally,
    window: OnceLock<Window>,
    /// Messages a consumer received twice or more (reliable redelivery) are still counted
    /// once each time; this counts the ones without a stamp (not sent by a bench).
    pub unstamped: AtomicU64,
    publish_us: Mutex<Histogram<u64>>,
    end_to_end_us: Mutex<Histogram<u64>>,
}

/// One collection: what happened since the previous one.
pub struct Interval {
    pub produced: (u64, u64),
    pub consumed: (u64, u64),
    pub publish_us: Histogram<u64>,
    pub end_to_end_us: Histogram<u64>,
}

impl Meter {
    pub fn new() -> Meter {
        Meter {
            produced: Counter::default(),
            consumed: Counter::default(),
            produced_in_window: Tally::default(),
            consumed_in_window: Tally::default(),
            window: OnceLock::new(),
            unstamped: AtomicU64::new(0),
            publish_us: Mutex::new(latency_histogram()),
            end_to_end_us: Mutex::new(latency_histogram()),
        }
    }

    /// Fixes the window once the run's timeline is known; nothing counts before.
    pub fn open_window(&self, window: Window) {
        let _ = self.window.set(window);
    }

    /// The window, once open.
    pub fn window(&self) -> Option<Window> {
        self.window.get().copied()
    }

    fn counts(&self, stamp: Option<u64>, now_ns: u64) -> bool {
        self.window.get().is_some_and(|w| w.counts(stamp, now_ns))
    }

    /// A batch of messages was acknowledged; `intended_ns` holds each one's send time.
    pub fn published(&self, intended_ns: &[u64], message_bytes: usize) {
        let now = now_ns();
        let mut in_window = 0u64;
        {
            let mut histogram = self.publish_us.lock().unwrap_or_else(|e| e.into_inner());
            for &sent in intended_ns {
                if self.counts(Some(sent), now) {
                    in_window += 1;
                    histogram.saturating_record(now.saturating_sub(sent) / 1_000);
                }
            }
        }
        self.sent(intended_ns.len() as u64, in_window, message_bytes, now);
    }

    /// Messages were sent with no acknowledgement to wait for (acks=0).
    pub fn sent_unacknowledged(&self, intended_ns: &[u64], message_bytes: usize) {
        let now = now_ns();
        let in_window = intended_ns
            .iter()
            .filter(|&&sent| self.counts(Some(sent), now))
            .count() as u64;
        self.sent(intended_ns.len() as u64, in_window, message_bytes, now);
    }

    fn sent(&self, messages: u64, in_window: u64, message_bytes: usize, now: u64) {
        let bytes = message_bytes as u64;
        self.produced.add(messages, messages * bytes);
        self.produced_in_window
            .add(in_window, in_window * bytes, now);
    }

    /// A consumer received these payloads.
    pub fn consumed<'a>(&self, payloads: impl IntoIterator<Item = &'a [u8]>) {
        let now = now_ns();
        let (mut messages, mut bytes, mut unstamped) = (0u64, 0u64, 0u64);
        let (mut in_window, mut in_window_bytes) = (0u64, 0u64);
        {
            let mut histogram = self.end_to_end_us.lock().unwrap_or_else(|e| e.into_inner());
            for payload in payloads {
                messages += 1;
                bytes += payload.len() as u64;
                let stamp = read_stamp(payload);
                if stamp.is_none() {
                    unstamped += 1;
                }
                if self.counts(stamp, now) {
                    in_window += 1;
                    in_window_bytes += payload.len() as u64;
                    if let Some(sent) = stamp {
                        histogram.saturating_record(now.saturating_sub(sent) / 1_000);
                    }
                }
            }
        }
        if unstamped > 0 {
            self.unstamped.fetch_add(unstamped, Ordering::Relaxed);
        }
        self.consumed.add(messages, bytes);
        self.consumed_in_window.add(in_window, in_window_bytes, now);
    }

    /// Empties the interval counters and histograms.
    pub fn collect(&self) -> Interval {
        let take = |h: &Mutex<Histogram<u64>>| {
            let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
            let copy = h.clone();
            h.reset();
            copy
        };
        Interval {
            produced: self.produced.take(),
            consumed: self.consumed.take(),
            publish_us: take(&self.publish_us),
            end_to_end_us: take(&self.end_to_end_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_foreign_payloads_are_recognised() {
        let mut payload = vec![7u8; 64];
        stamp(&mut payload, 1_234_567_890);
        assert_eq!(read_stamp(&payload), Some(1_234_567_890));
        assert_eq!(read_stamp(&[7u8; 64]), None);
        assert_eq!(read_stamp(&payload[..15]), None);
    }

    fn open_since(meter: &Meter, from_ns: u64, by: Membership) {
        meter.open_window(Window {
            from_ns,
            until_ns: u64::MAX,
            by,
        });
    }

    #[test]
    fn latency_is_measured_from_the_intended_send_time() {
        let meter = Meter::new();
        open_since(&meter, 0, Membership::SendTime);
        // Meant to go 50 ms ago: the wait counts, however late the client sent it.
        meter.published(&[now_ns() - 50_000_000], 100);
        let interval = meter.collect();
        assert_eq!(interval.produced, (1, 100));
        assert!(interval.publish_us.value_at_quantile(0.5) >= 50_000);
        // Collection empties the interval.
        let again = meter.collect();
        assert_eq!(again.produced, (0, 0));
        assert_eq!(again.publish_us.len(), 0);
        assert_eq!(meter.produced.total(), 1);
        assert_eq!(meter.produced_in_window.read().0, 1);
    }

    #[test]
    fn only_messages_sent_inside_the_window_are_counted_and_timed() {
        let meter = Meter::new();
        let from = now_ns() - 1_000_000_000;
        meter.open_window(Window {
            from_ns: from,
            until_ns: from + 500_000_000,
            by: Membership::SendTime,
        });
        let stamped = |sent: u64| {
            let mut payload = vec![0u8; 32];
            stamp(&mut payload, sent);
            payload
        };
        // Sent in the warm-up, inside, and after the window; all arriving now.
        let (early, inside, late) = (
            stamped(from - 1),
            stamped(from + 1),
            stamped(from + 600_000_000),
        );
        meter.published(&[from - 1, from + 1, from + 600_000_000], 32);
        meter.consumed([&early[..], &inside[..], &late[..], &[1u8; 32][..]]);
        assert_eq!(meter.produced.total(), 3);
        assert_eq!(meter.consumed.total(), 4);
        assert_eq!(meter.produced_in_window.read().0, 1);
        let (messages, bytes, last_ns) = meter.consumed_in_window.read();
        assert_eq!((messages, bytes), (1, 32));
        assert!(last_ns >= from + 1_000_000_000);
        let interval = meter.collect();
        assert_eq!(interval.publish_us.len(), 1);
        assert_eq!(interval.end_to_end_us.len(), 1);
        assert_eq!(meter.unstamped.load(Ordering::Acquire), 1);
    }

    #[test]
    fn a_consume_only_run_counts_what_arrives_inside_the_window() {
        let meter = Meter::new();
        let mut old = vec![0u8; 32];
        stamp(&mut old, 1);
        meter.consumed([&old[..]]);
        assert_eq!(
            meter.consumed_in_window.read().0,
            0,
            "before the window opens"
        );
        open_since(&meter, now_ns(), Membership::Arrival);
        meter.consumed([&old[..], &[2u8; 32][..]]);
        assert_eq!(meter.consumed_in_window.read().0, 2);
        assert_eq!(meter.collect().end_to_end_us.len(), 1);
    }
}
