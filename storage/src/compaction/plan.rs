//! Whether a compacted log is due for cleaning, and which part of it. Pure: the cleaner does
//! the I/O.
//!
//! As in Kafka: the log is split at the *clean end* (everything below has been through a
//! cleaning) into a clean part and a dirty part. The cleanable segments are the oldest sealed
//! ones, up to the first that is still being sealed, holds records newer than
//! `min.compaction.lag.ms`, or reaches past what readers may see (a replica's records above the
//! high watermark may still be truncated away, so they must not make older records go). A
//! cleaning is due when the dirty share of the cleanable bytes reaches
//! `min.cleanable.dirty.ratio`, or when its oldest dirty records are older than
//! `max.compaction.lag.ms`.

use oxbow_core::LogConfig;
use std::ops::Range;

/// What the plan needs to know of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentView {
    pub(crate) base_offset: u64,
    pub(crate) next_offset: u64,
    pub(crate) log_bytes: u64,
    pub(crate) max_timestamp: i64,
    /// Sealed, with its seal finished.
    pub(crate) sealed: bool,
}

/// A cleaning to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanPlan {
    /// The oldest segments to rewrite, all cleanable.
    pub(crate) segments: usize,
    /// The key map is built from the records at and above `clean_end` and below `dirty_end`.
    pub(crate) clean_end: u64,
    pub(crate) dirty_end: u64,
}

/// The cleaning due for a log whose segments are `segments` (oldest first, the active one
/// last), that readers see below `visible`, and that was cleaned below `clean_end`; `None`
/// when there is none.
pub(crate) fn plan(
    segments: &[SegmentView],
    visible: u64,
    clean_end: u64,
    config: &LogConfig,
    now_ms: i64,
) -> Option<CleanPlan> {
    if !config.cleanup_policy.compact {
        return None;
    }
    let lag_horizon = now_ms.saturating_sub(config.min_compaction_lag_ms as i64);
    let sealed = segments.len().saturating_sub(1);
    let cleanable = segments[..sealed]
        .iter()
        .take_while(|s| s.sealed && s.max_timestamp <= lag_horizon && s.next_offset <= visible)
        .count();
    let cleanable = &segments[..cleanable];
    let dirty_end = cleanable.last()?.next_offset;
    if clean_end >= dirty_end {
        return None;
    }
    // A segment the last cleaning stopped inside counts as dirty: it will be read for keys.
    let (clean, dirty): (Vec<&SegmentView>, Vec<&SegmentView>) =
        cleanable.iter().partition(|s| s.next_offset <= clean_end);
    let clean_bytes: u64 = clean.iter().map(|s| s.log_bytes).sum();
    let dirty_bytes: u64 = dirty.iter().map(|s| s.log_bytes).sum();
    let total = clean_bytes + dirty_bytes;
    let ratio_reached =
        total > 0 && dirty_bytes as f64 / total as f64 >= config.min_cleanable_dirty_ratio.get();
    // The oldest dirty segment's newest record bounds how long its records have waited.
    let overdue = config.max_compaction_lag_ms.is_some_and(|max| {
        dirty
            .first()
            .is_some_and(|s| s.max_timestamp < now_ms.saturating_sub(max as i64))
    });
    (ratio_reached || overdue).then_some(CleanPlan {
        segments: cleanable.len(),
        clean_end,
        dirty_end,
    })
}

/// How the segments to clean (oldest first) are cleaned in groups, each into one file, so that
/// cleaned logs do not pile up small files: consecutive segments whose sizes before cleaning add
/// up to at most `bytes_max` (the copy is no larger), spanning fewer than 2^32 offsets (the
/// index holds offsets relative to the first).
pub(crate) fn merge_groups(segments: &[SegmentView], bytes_max: u64) -> Vec<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (i, segment) in segments.iter().enumerate() {
        let joins = groups.last().is_some_and(|group| {
            let base = segments[group.start].base_offset;
            bytes + segment.log_bytes <= bytes_max && segment.next_offset - base <= u32::MAX as u64
        });
        match groups.last_mut() {
            Some(group) if joins => {
                group.end = i + 1;
                bytes += segment.log_bytes;
            }
            _ => {
                groups.push(i..i + 1);
                bytes = segment.log_bytes;
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::config::CleanupPolicy;

    fn seg(base: u64, next: u64, bytes: u64, max_timestamp: i64) -> SegmentView {
        SegmentView {
            base_offset: base,
            next_offset: next,
            log_bytes: bytes,
            max_timestamp,
            sealed: true,
        }
    }

    fn compacted() -> LogConfig {
        LogConfig {
            cleanup_policy: "compact".parse::<CleanupPolicy>().unwrap(),
            ..LogConfig::default()
        }
    }

    #[test]
    fn sealed_segments_are_cleaned_once_half_of_them_is_dirty() {
        let config = compacted();
        let log = [
            seg(0, 100, 1000, 10),
            seg(100, 200, 1000, 20),
            seg(200, 300, 1000, 30),
            seg(300, 350, 500, 40), // active
        ];
        let all = plan(&log, 350, 0, &config, 100).unwrap();
        assert_eq!((all.segments, all.clean_end, all.dirty_end), (3, 0, 300));
        // One of three dirty: below the ratio.
        assert_eq!(plan(&log, 350, 200, &config, 100), None);
        // Two of three: due; the map starts at the clean end.
        let some = plan(&log, 350, 100, &config, 100).unwrap();
        assert_eq!((some.segments, some.clean_end), (3, 100));
        // Stopped inside a segment last time: the whole segment counts as dirty.
        assert!(plan(&log, 350, 150, &config, 100).is_some());
        assert_eq!(plan(&log, 350, 300, &config, 100), None, "all clean");
        let delete_only = LogConfig::default();
        assert_eq!(plan(&log, 350, 0, &delete_only, 100), None);
    }

    #[test]
    fn young_unsealed_and_unreplicated_segments_stop_the_cleanable_part() {
        let mut config = compacted();
        let mut log = vec![
            seg(0, 100, 1000, 10),
            seg(100, 200, 1000, 90),
            seg(200, 300, 1000, 30),
            seg(300, 350, 500, 40),
        ];
        config.min_compaction_lag_ms = 50;
        assert_eq!(plan(&log, 350, 0, &config, 100).unwrap().dirty_end, 100);
        config.min_compaction_lag_ms = 0;
        assert_eq!(plan(&log, 250, 0, &config, 100).unwrap().dirty_end, 200);
        log[0].sealed = false;
        assert_eq!(plan(&log, 350, 0, &config, 100), None);
        assert_eq!(plan(&log[3..], 350, 0, &config, 100), None, "only active");
    }

    #[test]
    fn small_neighbours_merge_up_to_a_segment_and_within_relative_offsets() {
        let log = [
            seg(0, 100, 300, 0),
            seg(100, 200, 300, 0),
            seg(200, 300, 500, 0),
            seg(300, 400, 1200, 0), // alone: larger than a segment
            seg(400, 500, 100, 0),
            seg(500, 5_000_000_000, 100, 0),
        ];
        assert_eq!(merge_groups(&log, 1000), [0..2, 2..3, 3..4, 4..5, 5..6]);
        let whole = merge_groups(&log[..3], 1100);
        assert_eq!((whole.len(), whole[0].clone()), (1, 0..3));
        assert_eq!(merge_groups(&[], 1000), []);
    }

    #[test]
    fn records_waiting_past_the_max_lag_are_cleaned_below_the_ratio() {
        let mut config = compacted();
        let log = [
            seg(0, 100, 1000, 10),
            seg(100, 200, 1000, 20),
            seg(200, 300, 100, 30),
            seg(300, 350, 500, 40),
        ];
        assert_eq!(plan(&log, 350, 200, &config, 1000), None);
        config.max_compaction_lag_ms = Some(500);
        assert!(plan(&log, 350, 200, &config, 1000).is_some());
        assert_eq!(plan(&log, 350, 200, &config, 520), None, "not yet overdue");
    }
}
