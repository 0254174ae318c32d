//! `oxbow storage verify`: reads every frame of every partition and reports damage.
//!
//! Exit status: 0 when every segment is intact (a torn tail at the very end of a partition is
//! what a crash leaves behind and what recovery cuts, so it is reported but not counted), 1 when
//! any other range is damaged. Nothing is written except the direct-I/O probe file.

use oxbow_storage::layout::discover_partitions;
use oxbow_storage::verify::{verify_partition, IndexCheck, SegmentCheck};
use std::path::PathBuf;

/// Totals of a verification run.
#[derive(Debug, Default)]
pub struct VerifySummary {
    pub partitions: usize,
    pub segments: usize,
    pub batches: u64,
    pub damaged_ranges: usize,
}

fn describe(name: &str, segments: &[SegmentCheck], summary: &mut VerifySummary) {
    for (i, segment) in segments.iter().enumerate() {
        let file = segment
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let last_segment = i + 1 == segments.len();
        let index = match &segment.index {
            IndexCheck::Absent => "no index".to_string(),
            IndexCheck::Matches => "index ok".to_string(),
            IndexCheck::Stale(why) => format!("index stale ({why}); it is rebuilt at open"),
        };
        println!(
            "{name} {file}: {} batches, offsets {}..{}, {index}",
            segment.frames, segment.base_offset, segment.next_offset
        );
        summary.batches += segment.frames;
        for (j, range) in segment.damage.iter().enumerate() {
            let torn_tail =
                last_segment && j + 1 == segment.damage.len() && range.last_offset.is_none();
            let last = match (range.last_offset, segments.get(i + 1)) {
                (Some(last), _) => last.to_string(),
                (None, Some(next)) => next.base_offset.saturating_sub(1).to_string(),
                (None, None) => "log end".to_string(),
            };
            if torn_tail {
                println!(
                    "{name} {file}: torn tail at byte {} ({} bytes, {}): recovery cuts it at open",
                    range.position, range.bytes, range.reason
                );
            } else {
                summary.damaged_ranges += 1;
                println!(
                    "{name} {file}: DAMAGED at byte {} ({} bytes, {}): offsets {}..={last} unreadable",
                    range.position, range.bytes, range.reason, range.first_offset
                );
            }
        }
    }
}

/// Verifies every partition under `data_dir`, printing one line per segment and per damage.
pub fn run(data_dir: PathBuf) -> Result<VerifySummary, String> {
    if !data_dir.is_dir() {
        return Err(format!("{data_dir:?} is not a data directory"));
    }
    let discovery = discover_partitions(&data_dir).map_err(|e| format!("{data_dir:?}: {e}"))?;
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&data_dir, "verify")
                .await
                .map_err(|e| format!("preparing direct I/O in {data_dir:?}: {e}"))?;
            let mut summary = VerifySummary::default();
            for found in &discovery.partitions {
                let name = format!("{}/{}", found.topic, found.partition);
                let segments = verify_partition(&oxbow_storage::DmaDisk, &found.dir)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                summary.partitions += 1;
                summary.segments += segments.len();
                describe(&name, &segments, &mut summary);
            }
            Ok(summary)
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| e.to_string())?
}
