//! A set of offsets kept as disjoint half-open ranges: individually acknowledged offsets above
//! the cursor, which arrive out of order.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `[start, end)`, merged as they are added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    by_start: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds `[start, end)`, merging with neighbours.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with a range that begins before and reaches `start`.
        if let Some((&s, &e)) = self.by_start.range(..=start).next_back() {
            if e >= start {
                if e >= end {
                    return;
                }
                start = s;
                self.by_start.remove(&s);
            }
        }
        // Swallow ranges that begin inside or right after.
        while let Some((&s, &e)) = self.by_start.range(start..=end).next() {
            self.by_start.remove(&s);
            end = end.max(e);
        }
        self.by_start.insert(start, end);
    }

    /// Whether `offset` is in the set.
    pub fn contains(&self, offset: u64) -> bool {
        self.by_start
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &e)| offset < e)
    }

    /// If a range starts at `offset`, removes it and returns its end.
    pub fn take_starting_at(&mut self, offset: u64) -> Option<u64> {
        self.by_start.remove(&offset)
    }

    /// Drops every offset below `offset`.
    pub fn remove_below(&mut self, offset: u64) {
        let below: Vec<u64> = self.by_start.range(..offset).map(|(&s, _)| s).collect();
        for s in below {
            let e = self.by_start.remove(&s).expect("listed just now");
            if e > offset {
                self.by_start.insert(offset, e);
            }
        }
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.by_start.iter().map(|(&s, &e)| (s, e))
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.by_start.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn behaves_like_a_set_of_offsets(
            ops in proptest::collection::vec((0u64..200, 1u64..20), 0..60),
            cut in 0u64..220,
        ) {
            let mut set = RangeSet::default();
            let mut model = std::collections::BTreeSet::new();
            for (start, len) in ops {
                set.insert(start, start + len);
                model.extend(start..start + len);
            }
            set.remove_below(cut);
            model.retain(|&o| o >= cut);
            for o in 0..230 {
                prop_assert_eq!(set.contains(o), model.contains(&o), "offset {}", o);
            }
            // Ranges stay disjoint and never touch (they would have been merged).
            let ranges: Vec<_> = set.ranges().collect();
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].1 < pair[1].0, "{:?}", ranges);
            }
        }
    }
}
