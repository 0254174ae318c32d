//! What workers record while the load runs: counters and latency histograms, shared by every
//! producer and consumer thread and emptied once a second by the collector.
//!
//! Every payload starts with a stamp: a marker and the wall-clock time the message was *meant*
//! to be sent (under a fixed rate, its slot in the schedule, not the moment the client got to
//! it). Latency is measured from that time, so a stall anywhere (broker, network, or the bench's
//! own client falling behind) shows in the percentiles instead of silently lowering the rate:
//! the correction for coordinated omission that wrk2 made standard. Wall-clock time lets a
//! consumer in another process on the same host read the stamp.

use super::plan::STAMP_BYTES;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
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

/// Everything the workers share.
pub struct Meter {
    pub produced: Counter,
    pub consumed: Counter,
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
            unstamped: AtomicU64::new(0),
            publish_us: Mutex::new(latency_histogram()),
            end_to_end_us: Mutex::new(latency_histogram()),
        }
    }

    /// A batch of messages was acknowledged; `intended_ns` holds each one's send time.
    pub fn published(&self, intended_ns: &[u64], message_bytes: usize) {
        let now = now_ns();
        {
            let mut histogram = self.publish_us.lock().unwrap_or_else(|e| e.into_inner());
            for &sent in intended_ns {
                histogram.saturating_record(now.saturating_sub(sent) / 1_000);
            }
        }
        let n = intended_ns.len() as u64;
        self.produced.add(n, n * message_bytes as u64);
    }

    /// Messages were sent with no acknowledgement to wait for (acks=0).
    pub fn sent_unacknowledged(&self, messages: u64, message_bytes: usize) {
        self.produced.add(messages, messages * message_bytes as u64);
    }

    /// A consumer received these payloads.
    pub fn consumed<'a>(&self, payloads: impl IntoIterator<Item = &'a [u8]>) {
        let now = now_ns();
        let (mut messages, mut bytes, mut unstamped) = (0u64, 0u64, 0u64);
        {
            let mut histogram = self.end_to_end_us.lock().unwrap_or_else(|e| e.into_inner());
            for payload in payloads {
                messages += 1;
                bytes += payload.len() as u64;
                match read_stamp(payload) {
                    Some(sent) => histogram.saturating_record(now.saturating_sub(sent) / 1_000),
                    None => unstamped += 1,
                }
            }
        }
        if unstamped > 0 {
            self.unstamped.fetch_add(unstamped, Ordering::Relaxed);
        }
        self.consumed.add(messages, bytes);
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

    #[test]
    fn latency_is_measured_from_the_intended_send_time() {
        let meter = Meter::new();
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
    }
}
