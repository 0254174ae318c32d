//! Consistent hashing of keys onto consumers, for Key_Shared subscriptions.
//!
//! Every consumer owns [`POINTS_PER_CONSUMER`] points on a 64-bit ring, placed by hashing its
//! name, so a consumer that reconnects under the same name gets the same keys back, and a
//! consumer joining or leaving moves only the keys next to its own points.

/// Points each consumer places on the ring: more points spread keys more evenly (with 100
/// points, four consumers each get 25% ± a few percent of uniformly hashed keys).
pub const POINTS_PER_CONSUMER: u32 = 100;

/// A hash ring of consumer ids.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Vec<(u64, u64)>,
}

/// 64-bit FNV-1a followed by a finaliser (splitmix64), so short keys spread over the ring.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Ring {
    /// Builds the ring for `(id, name)` members.
    pub fn build<'a>(members: impl IntoIterator<Item = (u64, &'a str)>) -> Ring {
        let mut points = Vec::new();
        for (id, name) in members {
            for i in 0..POINTS_PER_CONSUMER {
                points.push((hash_key(format!("{name}#{i}").as_bytes()), id));
            }
        }
        // Ties (the same name attached twice) go to the lower id, deterministically.
        points.sort_unstable();
        Ring { points }
    }

    /// The consumer owning `key`: the first point at or after its hash, wrapping around.
    pub fn owner(&self, key: &[u8]) -> Option<u64> {
        if self.points.is_empty() {
            return None;
        }
        let hash = hash_key(key);
        let at = self.points.partition_point(|&(point, _)| point < hash);
        Some(self.points[at % self.points.len()].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_evenly_and_move_little_on_join() {
        let four = Ring::build([(1, "a"), (2, "b"), (3, "c"), (4, "d")]);
        let mut counts = [0u32; 5];
        let keys: Vec<String> = (0..40_000).map(|i| format!("key-{i}")).collect();
        for key in &keys {
            counts[four.owner(key.as_bytes()).unwrap() as usize] += 1;
        }
        for &count in &counts[1..] {
            assert!((7_000..13_000).contains(&count), "{counts:?}");
        }
        let five = Ring::build([(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]);
        let moved = keys
            .iter()
            .filter(|k| four.owner(k.as_bytes()) != five.owner(k.as_bytes()))
            .count();
        // Only keys taken by the newcomer move: about a fifth.
        assert!(moved < keys.len() * 3 / 10, "{moved}");
        for key in &keys {
            let (before, after) = (four.owner(key.as_bytes()), five.owner(key.as_bytes()));
            assert!(before == after || after == Some(5));
        }
    }
}
