//! Which shard of a node owns a partition.

/// The owner shard of `topic`/`partition` on a node with `shards` shards. Stable across restarts
/// (it decides where a partition's files are opened) and spreads one topic's partitions over
/// consecutive shards, so a topic with as many partitions as shards uses every shard.
pub fn owner_shard(topic: &str, partition: u32, shards: usize) -> usize {
    assert!(shards > 0, "a node has at least one shard");
    // FNV-1a: tiny, stable across Rust versions (unlike std's hasher), good enough for spread.
    let topic_hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (topic_hash.wrapping_add(partition as u64) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_topic_use_every_shard() {
        for shards in 1..8 {
            let mut owners: Vec<usize> = (0..shards as u32)
                .map(|p| owner_shard("t", p, shards))
                .collect();
            owners.sort_unstable();
            assert_eq!(owners, (0..shards).collect::<Vec<_>>());
        }
        assert_eq!(owner_shard("orders", 3, 4), owner_shard("orders", 3, 4));
    }
}
