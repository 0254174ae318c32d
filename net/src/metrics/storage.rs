//! The storage engine's totals: the shards' read caches and the cleaner of compacted topics.

use super::{write_totals, MetricsSnapshot, Total};

pub(super) fn render_storage(out: &mut String, snapshots: &[MetricsSnapshot]) {
    let total = |f: fn(&MetricsSnapshot) -> u64| snapshots.iter().map(f).sum::<u64>();
    let rows: [Total; 14] = [
        (
            "oxbow_read_cache_hits_total",
            "counter",
            "Block reads from the shards' read caches served from memory.",
            total(|s| s.read_cache.hits),
        ),
        (
            "oxbow_read_cache_misses_total",
            "counter",
            "Block reads that went to the disk.",
            total(|s| s.read_cache.misses),
        ),
        (
            "oxbow_read_cache_read_ahead_blocks_total",
            "counter",
            "Blocks read ahead of sequential readers.",
            total(|s| s.read_cache.read_ahead_blocks),
        ),
        (
            "oxbow_read_cache_read_ahead_unused_total",
            "counter",
            "Blocks read ahead and evicted before any reader used them.",
            total(|s| s.read_cache.read_ahead_unused),
        ),
        (
            "oxbow_read_cache_written_blocks_total",
            "counter",
            "Blocks the writers put in the read caches as they wrote them (recent data).",
            total(|s| s.read_cache.written_blocks),
        ),
        (
            "oxbow_read_cache_evictions_total",
            "counter",
            "Blocks evicted from the read caches.",
            total(|s| s.read_cache.evictions),
        ),
        (
            "oxbow_read_cache_disk_read_bytes_total",
            "counter",
            "Bytes of segments read from the disk by readers (through the read caches).",
            total(|s| s.read_cache.disk_bytes),
        ),
        (
            "oxbow_read_cache_bytes",
            "gauge",
            "Bytes held by the read caches.",
            total(|s| s.read_cache.bytes),
        ),
        (
            "oxbow_read_cache_bytes_max",
            "gauge",
            "The read caches' budget (per shard, summed).",
            total(|s| s.read_cache.bytes_max),
        ),
        (
            "oxbow_compaction_passes_total",
            "counter",
            "Passes of the cleaner that compacted a partition.",
            total(|s| s.compaction.passes),
        ),
        (
            "oxbow_compaction_segments_rewritten_total",
            "counter",
            "Segments the cleaner replaced by compacted copies.",
            total(|s| s.compaction.segments_rewritten),
        ),
        (
            "oxbow_compaction_removed_bytes_total",
            "counter",
            "Bytes of segments compaction freed.",
            total(|s| s.compaction.bytes_removed),
        ),
        (
            "oxbow_compaction_removed_records_total",
            "counter",
            "Records compaction removed (replaced by newer ones of their key, or expired tombstones).",
            total(|s| s.compaction.records_removed),
        ),
        (
            "oxbow_compaction_failures_total",
            "counter",
            "Passes of the cleaner that failed with an I/O error (the log is left as it was).",
            total(|s| s.compaction.failures),
        ),
    ];
    write_totals(out, &rows);
}
