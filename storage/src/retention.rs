//! Which sealed segments retention deletes. Pure: the partition does the deleting.

/// What retention needs to know of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStats {
    /// Bytes of frames in the segment.
    pub log_bytes: u64,
    /// Largest record timestamp (ms), `i64::MIN` when unknown or empty.
    pub max_timestamp: i64,
}

/// How many of the oldest segments to delete. `segments` is ordered oldest first and its last
/// entry is the active segment, which is never deleted. Like Kafka: by size, delete the oldest
/// while what remains is still at least `bytes_max`; by age, delete the oldest whose newest
/// record is older than `age_max_ms`.
pub fn segments_to_delete(
    segments: &[SegmentStats],
    bytes_max: Option<u64>,
    age_max_ms: Option<u64>,
    now_ms: i64,
) -> usize {
    let sealed = segments.len().saturating_sub(1);
    let mut total: u64 = segments.iter().map(|s| s.log_bytes).sum();
    let mut delete = 0;
    while delete < sealed {
        let segment = segments[delete];
        let too_big = bytes_max.is_some_and(|max| total.saturating_sub(segment.log_bytes) >= max);
        let too_old =
            age_max_ms.is_some_and(|age| segment.max_timestamp < now_ms.saturating_sub(age as i64));
        if !(too_big || too_old) {
            break;
        }
        total -= segment.log_bytes;
        delete += 1;
    }
    delete
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(log_bytes: u64, max_timestamp: i64) -> SegmentStats {
        SegmentStats {
            log_bytes,
            max_timestamp,
        }
    }

    #[test]
    fn size_retention_keeps_at_least_the_limit_and_the_active_segment() {
        let segs = [seg(100, 0), seg(100, 0), seg(100, 0), seg(100, 0)];
        assert_eq!(segments_to_delete(&segs, Some(250), None, 0), 1);
        assert_eq!(segments_to_delete(&segs, Some(200), None, 0), 2);
        assert_eq!(segments_to_delete(&segs, Some(1), None, 0), 3); // never the active one
        assert_eq!(segments_to_delete(&segs, Some(1000), None, 0), 0);
        assert_eq!(segments_to_delete(&segs[..1], Some(1), None, 0), 0);
    }

    #[test]
    fn age_retention_deletes_an_expired_prefix_only() {
        let segs = [seg(1, 10), seg(1, 50), seg(1, 20), seg(1, 0)];
        assert_eq!(segments_to_delete(&segs, None, Some(100), 140), 1);
        assert_eq!(segments_to_delete(&segs, None, Some(100), 1_000), 3);
        assert_eq!(segments_to_delete(&segs, None, Some(100), 50), 0);
    }
}
