//! What a run's window comes to: messages and rates of producers and consumers, and whether
//! either fell behind it. Pure arithmetic over the meter's tallies, so it is tested alone.

use super::plan::Workload;
use serde::Serialize;
use std::time::Duration;

/// Consumers whose last message of the window arrives later than this after it closed were
/// behind: what they report is how fast they worked through a backlog. Consumers keeping up
/// get it within their end-to-end latency (40 ms at 350 MB/s with 1 MB batches here); one
/// behind by 0.46 s showed a p50 of 813 ms against 37 ms to publish.
const BEHIND_AFTER: Duration = Duration::from_millis(250);

/// Messages and bytes over the measured time.
#[derive(Serialize, Default, Clone, Debug, PartialEq)]
pub struct Throughput {
    /// Messages sent inside the window (acknowledged or delivered, whenever that was); for a
    /// consume-only run, messages received inside it.
    pub messages: u64,
    pub bytes: u64,
    /// The window (from the end of the warm-up to the end of sending) or, for consumers, to
    /// the delivery of its last message if that came later.
    pub seconds: f64,
    pub messages_per_second: f64,
    pub megabytes_per_second: f64,
}

fn throughput(messages: u64, bytes: u64, from_ns: u64, until_ns: u64) -> Throughput {
    let seconds = until_ns.saturating_sub(from_ns) as f64 / 1e9;
    let rate = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    Throughput {
        messages,
        bytes,
        seconds,
        messages_per_second: rate(messages),
        megabytes_per_second: rate(bytes) / 1e6,
    }
}

/// What the window's tallies say: counts and rates, and whether producers and consumers kept
/// up.
#[derive(Serialize, Debug, PartialEq)]
pub struct Figures {
    pub produced: Throughput,
    pub consumed: Throughput,
    /// How long after the window closed its last message was acknowledged (acks=0: sent).
    pub answered_after_window_seconds: Option<f64>,
    /// Whether that was more than a quarter of a second: producers (or the broker) could not
    /// keep the schedule, and the produced rate is over the time they took.
    pub producers_fell_behind: bool,
    /// How long after the window closed its last message reached a consumer.
    pub delivered_after_window_seconds: Option<f64>,
    /// Whether that was more than a quarter of a second (or nothing arrived): consumers were
    /// behind, and the consumed rate and end-to-end latency describe a backlog.
    pub consumers_fell_behind: bool,
    /// Messages sent in the window less deliveries (a redelivered message counts twice, so
    /// this is a lower bound of what no consumer received before the run ended).
    pub undelivered_messages: u64,
}

impl Figures {
    /// `produced` and `consumed` are the window's (messages, bytes, last arrival:
    /// acknowledgement or delivery); the window runs from `from_ns` to `window_end_ns`, when
    /// sending ended. Rates run to the window's end or its last arrival, whichever is later: a
    /// producer or consumer that falls behind is measured over the time it took, not credited
    /// with the schedule.
    pub fn of(
        workload: Workload,
        from_ns: u64,
        window_end_ns: u64,
        produced: (u64, u64, u64),
        consumed: (u64, u64, u64),
    ) -> Figures {
        let (received, received_bytes, last_received_ns) = consumed;
        if workload == Workload::Consume {
            return Figures {
                produced: Throughput::default(),
                consumed: throughput(received, received_bytes, from_ns, last_received_ns),
                answered_after_window_seconds: None,
                producers_fell_behind: false,
                delivered_after_window_seconds: None,
                consumers_fell_behind: false,
                undelivered_messages: 0,
            };
        }
        let (sent, sent_bytes, last_answered_ns) = produced;
        let after_window = |last_ns: u64| last_ns.saturating_sub(window_end_ns);
        let behind = |late_ns: &u64| *late_ns > BEHIND_AFTER.as_nanos() as u64;
        let seconds = |ns: u64| ns as f64 / 1e9;
        let consumes = workload == Workload::ProduceConsume;
        let answered_after = (sent > 0).then(|| after_window(last_answered_ns));
        let delivered_after = (consumes && received > 0).then(|| after_window(last_received_ns));
        Figures {
            produced: throughput(
                sent,
                sent_bytes,
                from_ns,
                window_end_ns.max(last_answered_ns),
            ),
            consumed: throughput(
                received,
                received_bytes,
                from_ns,
                window_end_ns.max(last_received_ns),
            ),
            answered_after_window_seconds: answered_after.map(seconds),
            producers_fell_behind: answered_after.as_ref().is_some_and(behind),
            delivered_after_window_seconds: delivered_after.map(seconds),
            // Nothing delivered at all is the worst case of falling behind.
            consumers_fell_behind: consumes
                && sent > 0
                && delivered_after.as_ref().is_none_or(behind),
            undelivered_messages: if consumes {
                sent.saturating_sub(received)
            } else {
                0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_consumer_that_keeps_up_is_measured_over_the_window() {
        // 10 s window from t=2 s; the last message arrives 3 ms after it closes.
        let f = Figures::of(
            Workload::ProduceConsume,
            2 * S,
            12 * S,
            (50_000, 50_000_000, 12 * S + 2_000_000),
            (50_000, 50_000_000, 12 * S + 3_000_000),
        );
        assert!((f.produced.seconds - 10.002).abs() < 1e-9);
        assert!((f.produced.messages_per_second - 4_999.0).abs() < 1.0);
        assert!(!f.producers_fell_behind);
        assert!((f.consumed.seconds - 10.003).abs() < 1e-9);
        assert_eq!(f.delivered_after_window_seconds, Some(0.003));
        assert!(!f.consumers_fell_behind);
        assert_eq!(f.undelivered_messages, 0);
    }

    #[test]
    fn a_consumer_behind_the_producers_is_reported_and_its_rate_is_over_its_own_time() {
        // The report of the issue: a 10 s window whose messages took 16.6 s to deliver.
        let f = Figures::of(
            Workload::ProduceConsume,
            2 * S,
            12 * S,
            (41_200_000, 0, 12 * S),
            (41_000_000, 0, 18 * S + 600_000_000),
        );
        assert!(f.consumers_fell_behind);
        assert!((f.consumed.seconds - 16.6).abs() < 1e-9);
        assert!(f.consumed.messages_per_second < f.produced.messages_per_second);
        assert_eq!(f.undelivered_messages, 200_000);
    }

    #[test]
    fn a_run_that_stops_early_is_measured_to_its_last_answer_and_produce_only_has_no_consumers() {
        let f = Figures::of(
            Workload::Produce,
            0,
            S / 2,
            (1_500, 300_000, S / 2),
            (0, 0, 0),
        );
        assert_eq!(f.produced.seconds, 0.5);
        assert_eq!(f.produced.messages_per_second, 3_000.0);
        assert_eq!(f.consumed.messages, 0);
        assert_eq!(f.delivered_after_window_seconds, None);
        assert!(!f.producers_fell_behind && !f.consumers_fell_behind);
        assert_eq!(f.undelivered_messages, 0);
    }

    #[test]
    fn producers_behind_the_schedule_are_credited_with_their_time_not_the_schedule() {
        // 1 M msg/s asked for 10 s; the broker took 50 s to answer them all.
        let f = Figures::of(
            Workload::Produce,
            0,
            10 * S,
            (10_000_000, 0, 50 * S),
            (0, 0, 0),
        );
        assert_eq!(f.produced.messages_per_second, 200_000.0);
        assert!(f.producers_fell_behind);
        assert_eq!(f.answered_after_window_seconds, Some(40.0));
    }

    #[test]
    fn consumers_that_received_nothing_fell_behind() {
        let f = Figures::of(Workload::ProduceConsume, 0, S, (100, 0, S), (0, 0, 0));
        assert!(f.consumers_fell_behind);
        assert_eq!(f.undelivered_messages, 100);
    }
}
