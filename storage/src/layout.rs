//! Where a partition's files live and what their names mean.
//!
//! `<data_dir>/<topic>/<partition>/<base offset, 20 digits>.log`, with `.index` beside each
//! sealed segment. Names that do not fit are reported, never deleted: they may be an operator's.

use std::path::{Path, PathBuf};

/// Longest topic name (Kafka's limit, so every Kafka client's name fits).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// A topic name is rejected: the reason names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic name {name:?}: {reason}")]
pub struct TopicNameError {
    /// The rejected name.
    pub name: String,
    /// The rule it breaks.
    pub reason: &'static str,
}

/// Checks a topic name against Kafka's rules: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    let fail = |reason| {
        Err(TopicNameError {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return fail("must be 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return fail("must not be '.' or '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return fail("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Directory of one partition.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(topic).join(partition.to_string())
}

/// The segment file for a base offset.
pub fn segment_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

/// The index file for a base offset.
pub fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

/// Both files of a segment: the `.log` and its `.index`.
pub fn segment_files(dir: &Path, base_offset: u64) -> [PathBuf; 2] {
    [segment_path(dir, base_offset), index_path(dir, base_offset)]
}

/// Compaction's cleaned copy of the segments from `base` up to `end`, before it takes the
/// first one's name.
pub fn swap_path(dir: &Path, base: u64, end: u64) -> PathBuf {
    dir.join(format!("{base:020}-{end:020}.swap"))
}

/// Removes a file; one that is already gone is not an error.
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Moves `<data>/<topic>` to `<data>/.stray/<topic>-<unix ms>`, out of sight of
/// [`discover_partitions`] but not deleted, and returns where it went.
pub fn set_aside_topic(data_dir: &Path, topic: &str) -> std::io::Result<PathBuf> {
    let strays = data_dir.join(".stray");
    std::fs::create_dir_all(&strays)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let to = strays.join(format!("{topic}-{millis}"));
    std::fs::rename(data_dir.join(topic), &to)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(to)
}

/// What a file in a partition directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionFile {
    /// A segment, by base offset.
    Segment(u64),
    /// A segment's index, by base offset.
    Index(u64),
    /// The transaction state at an offset (see `txn/snapshot.rs`).
    TxnSnapshot(u64),
    /// The leader-epoch checkpoint (see `epochs.rs`).
    EpochCheckpoint,
    /// The log-start checkpoint (see `log_start.rs`).
    LogStartCheckpoint,
    /// How far compaction went (see `compaction/cleaned.rs`).
    CleanerCheckpoint,
    /// Compaction's cleaned copy of the segments from `base` to `end` (exclusive), complete,
    /// replacing them (see `compaction/mod.rs`).
    Swap {
        /// The first segment's base offset: the copy's.
        base: u64,
        /// The offset after the last segment it replaces.
        end: u64,
    },
    /// A leftover of an interrupted atomic write.
    Temporary,
    /// Anything else.
    Unknown,
}

/// Classifies a file name found in a partition directory.
pub fn classify(name: &str) -> PartitionFile {
    let parse = |stem: &str| {
        (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse::<u64>().ok())
            .flatten()
    };
    if let Some(stem) = name.strip_suffix(".log") {
        return parse(stem).map_or(PartitionFile::Unknown, PartitionFile::Segment);
    }
    if let Some(stem) = name.strip_suffix(".index") {
        return parse(stem).map_or(PartitionFile::Unknown, PartitionFile::Index);
    }
    if let Some(stem) = name.strip_suffix(".txn.snapshot") {
        return parse(stem).map_or(PartitionFile::Unknown, PartitionFile::TxnSnapshot);
    }
    if let Some((base, end)) = (name.strip_suffix(".swap")).and_then(|stem| stem.split_once('-')) {
        return match (parse(base), parse(end)) {
            (Some(base), Some(end)) if base < end => PartitionFile::Swap { base, end },
            _ => PartitionFile::Unknown,
        };
    }
    if name.ends_with(".tmp") {
        return PartitionFile::Temporary;
    }
    if name == "leader-epoch-checkpoint" {
        return PartitionFile::EpochCheckpoint;
    }
    if name == "log-start-offset" {
        return PartitionFile::LogStartCheckpoint;
    }
    if name == "cleaner-checkpoint" {
        return PartitionFile::CleanerCheckpoint;
    }
    PartitionFile::Unknown
}

/// A partition found on disk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FoundPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Its directory.
    pub dir: PathBuf,
}

/// What [`discover_partitions`] found under a data directory.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Partitions, sorted by topic then partition.
    pub partitions: Vec<FoundPartition>,
    /// Entries that are not partitions, each with the reason.
    pub ignored: Vec<(PathBuf, &'static str)>,
}

/// Lists the partitions under `data_dir`, and the entries that are not partitions. A missing
/// `data_dir` holds no partitions.
pub fn discover_partitions(data_dir: &Path) -> std::io::Result<Discovery> {
    let mut found = Vec::new();
    let mut ignored = Vec::new();
    let topics = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Discovery::default()),
        Err(e) => return Err(e),
    };
    for topic in topics {
        let topic = topic?;
        let path = topic.path();
        let name = topic.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // shard probe files and other internal state
        }
        if !topic.file_type()?.is_dir() || validate_topic_name(&name).is_err() {
            ignored.push((path, "not a topic directory (invalid topic name)"));
            continue;
        }
        for partition in std::fs::read_dir(&path)? {
            let partition = partition?;
            if partition.file_name().to_string_lossy().starts_with('.') {
                continue; // the topic's own files, e.g. its config overrides
            }
            let number = partition.file_name().to_string_lossy().parse::<u32>();
            match number {
                Ok(n) if partition.file_type()?.is_dir() => found.push(FoundPartition {
                    topic: name.clone(),
                    partition: n,
                    dir: partition.path(),
                }),
                _ => ignored.push((partition.path(), "not a partition directory")),
            }
        }
    }
    found.sort();
    Ok(Discovery {
        partitions: found,
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_garbage_is_unknown() {
        let dir = Path::new("/d");
        let seg = segment_path(dir, 42);
        assert_eq!(seg, Path::new("/d/00000000000000000042.log"));
        let name = seg.file_name().unwrap().to_str().unwrap();
        assert_eq!(classify(name), PartitionFile::Segment(42));
        assert_eq!(
            classify("00000000000000000042.index"),
            PartitionFile::Index(42)
        );
        assert_eq!(classify("42.log"), PartitionFile::Unknown);
        assert_eq!(classify("0000000000000000004x.log"), PartitionFile::Unknown);
        assert_eq!(classify("99999999999999999999.log"), PartitionFile::Unknown);
        assert_eq!(
            classify("00000000000000000042.tmp"),
            PartitionFile::Temporary
        );
        assert_eq!(
            classify("log-start-offset"),
            PartitionFile::LogStartCheckpoint
        );
        assert_eq!(classify("log-start-offset.tmp"), PartitionFile::Temporary);
        assert_eq!(
            classify("00000000000000000042.txn.snapshot"),
            PartitionFile::TxnSnapshot(42)
        );
        // Its atomic write's temporary file is its own, not a segment index's.
        assert_eq!(
            classify("00000000000000000042.txn.tmp"),
            PartitionFile::Temporary
        );
        let swap = swap_path(dir, 42, 100);
        let name = swap.file_name().unwrap().to_str().unwrap();
        assert_eq!(classify(name), PartitionFile::Swap { base: 42, end: 100 });
        let backwards = "00000000000000000100-00000000000000000042.swap";
        assert_eq!(classify(backwards), PartitionFile::Unknown);
        assert_eq!(classify("42-100.swap"), PartitionFile::Unknown);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "a/b", "spa ce", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
