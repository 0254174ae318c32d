//! Reads served by a partition's owner: fetches with their long poll, and offset lookups.

use super::message::{FetchOutcome, FetchPart, PartitionError, ShardMessage};
use super::Shard;
use oxbow_core::RecordBatch;
use oxbow_storage::{Partition, ReadError};

/// The batch attribute bit of Kafka's timestamp type: set, the broker's append time.
const LOG_APPEND_TIME: i16 = 0x08;
use std::time::Duration;

/// The first record with a timestamp at or after `at` (ms) at or after the log start: its
/// offset and timestamp, or (-1, -1) past the end (Kafka's ListOffsets by time). The batch
/// holding it is the first whose newest timestamp reaches `at`, found through the segments'
/// time index; inside it the records are read (decompressed within `decompressed_bytes_max`)
/// for the exact one. When deleted records hold every match in that batch, the log is read on
/// from its start.
pub async fn offset_at_time(
    log: &Partition,
    at: i64,
    decompressed_bytes_max: u64,
) -> Result<(i64, i64), PartitionError> {
    let storage = |e: ReadError| PartitionError::Storage(e.to_string());
    let Some(batch) = log.first_batch_at_time(at).await.map_err(storage)? else {
        return Ok((-1, -1));
    };
    let start = log.log_start_offset();
    if let Some(found) = first_record_at(&batch, at, start, decompressed_bytes_max) {
        return Ok(found);
    }
    let mut from = start.max(batch.last_offset() + 1);
    loop {
        let batches = match log.read(from, TIME_SCAN_BYTES).await {
            Ok(batches) if !batches.is_empty() => batches,
            Ok(_) => return Ok((-1, -1)),
            // Retention or another deletion moved the start meanwhile: look from there.
            Err(ReadError::OffsetOutOfRange { log_start, .. }) if log_start > from => {
                from = log_start;
                continue;
            }
            Err(ReadError::OffsetOutOfRange { .. }) => return Ok((-1, -1)),
            Err(e) => return Err(storage(e)),
        };
        for batch in &batches {
            if let Some(found) = first_record_at(batch, at, from, decompressed_bytes_max) {
                return Ok(found);
            }
        }
        let last = batches.last().expect("not empty");
        from = last.last_offset() + 1;
    }
}

/// How much a lookup by time reads at once when it must read on from the log start.
const TIME_SCAN_BYTES: usize = 1 << 20;

/// The first record of `batch` at or after `at`, and at or after offset `from`. Under
/// LogAppendTime every record has the batch's time. A batch whose records cannot be read
/// answers with its first offset and newest time (what a reader of the batch would start
/// from).
fn first_record_at(
    batch: &RecordBatch,
    at: i64,
    from: u64,
    decompressed_bytes_max: u64,
) -> Option<(i64, i64)> {
    let first = batch.base_offset().max(from);
    let next = batch.last_offset() + 1;
    if batch.max_timestamp() < at || first >= next {
        return None;
    }
    let whole = (first as i64, batch.max_timestamp());
    if batch.attributes() & LOG_APPEND_TIME != 0 {
        return Some(whole);
    }
    let Ok(records) = batch.records(decompressed_bytes_max) else {
        return Some(whole);
    };
    for record in records {
        match record {
            Ok(r) if r.timestamp >= at && r.offset >= first => {
                return Some((r.offset as i64, r.timestamp))
            }
            Ok(_) => {}
            // Unreadable from here: a reader of the batch would start at its first offset.
            Err(_) => return Some(whole),
        }
    }
    None
}

impl Shard {
    /// Reads every part of a fetch in one round: each owner answers at once when it has data,
    /// otherwise it waits for data (up to `max_wait`) and then reads. Once the answers hold
    /// `min_bytes` (or an error), the others stop waiting and answer with what they have. Each
    /// partition is read exactly once and nothing keeps waiting after the answer. Outcomes come
    /// back in the order of `parts`.
    pub async fn fetch(
        &self,
        parts: Vec<Result<FetchPart, PartitionError>>,
        max_wait: Duration,
        min_bytes: usize,
    ) -> Vec<FetchOutcome> {
        let count = parts.len();
        let mut outcomes: Vec<Option<FetchOutcome>> = (0..count).map(|_| None).collect();
        let (reply, replies) = flume::bounded(count.max(1));
        let (stop, stop_waiting) = flume::bounded::<()>(1);
        let mut stop = Some(stop);
        let mut asked = 0;
        for (slot, part) in parts.into_iter().enumerate() {
            let part = part.and_then(|part| match self.partition_count(&part.topic) {
                Some(n) if part.partition < n => Ok(part),
                _ => Err(PartitionError::UnknownTopicOrPartition),
            });
            match part {
                Ok(part) => {
                    let inbox = self.owner_inbox(&part.topic, part.partition);
                    let message = ShardMessage::Fetch {
                        part,
                        max_wait,
                        stop_waiting: stop_waiting.clone(),
                        reply: reply.clone(),
                        slot,
                    };
                    if inbox.send_async(message).await.is_ok() {
                        asked += 1;
                    }
                }
                Err(e) => {
                    // An error answers the fetch at once, as Kafka does.
                    stop = None;
                    outcomes[slot] = Some(FetchOutcome {
                        error: Some(e),
                        ..FetchOutcome::default()
                    });
                }
            }
        }
        drop((reply, stop_waiting));
        let mut bytes = 0;
        for _ in 0..asked {
            let Ok((slot, outcome)) = replies.recv_async().await else {
                break;
            };
            bytes += outcome.batches.iter().map(|b| b.len()).sum::<usize>();
            if bytes >= min_bytes.max(1) || outcome.error.is_some() {
                stop = None;
            }
            outcomes[slot] = Some(outcome);
        }
        drop(stop);
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| FetchOutcome {
                    error: Some(PartitionError::Storage("the owner shard is gone".into())),
                    ..FetchOutcome::default()
                })
            })
            .collect()
    }

    /// Reads a partition this shard owns; at the log end, first waits for data, up to
    /// `max_wait` or until `stop_waiting` closes (the long poll).
    pub(super) async fn fetch_local(
        &self,
        part: &FetchPart,
        max_wait: Duration,
        stop_waiting: flume::Receiver<()>,
    ) -> FetchOutcome {
        let log = match self.leading(&part.topic, part.partition) {
            Ok(host) => host.log.clone(),
            Err(e) => {
                return FetchOutcome {
                    error: Some(e),
                    ..FetchOutcome::default()
                }
            }
        };
        let offset = part.offset;
        // A read_committed reader at the last stable offset waits for anything new: the
        // stable offset moves only when records become visible (a marker among them).
        let readable_end = match part.read_committed {
            true => log.last_stable_offset(),
            false => log.log_end_offset(),
        };
        if offset >= readable_end && offset <= log.log_end_offset() && !max_wait.is_zero() {
            let arrival = log.wait_for_offset(log.log_end_offset());
            let timeout = async {
                glommio::timer::sleep(max_wait).await;
            };
            let stopped = async {
                let _ = stop_waiting.recv_async().await;
            };
            futures_lite::future::or(arrival, futures_lite::future::or(timeout, stopped)).await;
        }
        let result = match part.read_committed {
            true => log.read_committed(offset, part.max_bytes).await,
            false => log.read(offset, part.max_bytes).await,
        };
        let (batches, error) = match result {
            Ok(batches) => (batches, None),
            Err(ReadError::OffsetOutOfRange { .. }) => {
                (Vec::new(), Some(PartitionError::OffsetOutOfRange))
            }
            Err(e @ ReadError::Corrupt { .. }) => {
                (Vec::new(), Some(PartitionError::Corrupt(e.to_string())))
            }
            Err(e) => (Vec::new(), Some(PartitionError::Storage(e.to_string()))),
        };
        let aborted = match (part.read_committed, batches.last()) {
            (true, Some(last)) => log.aborted_transactions(offset, last.last_offset() + 1),
            _ => Vec::new(),
        };
        FetchOutcome {
            high_watermark: log.log_end_offset(),
            last_stable_offset: log.last_stable_offset(),
            aborted,
            log_start_offset: log.log_start_offset(),
            batches,
            error,
        }
    }

    /// Log start (-2), log end (-1, the last stable offset under `read_committed`), or the
    /// offset at a time, of a partition this shard owns.
    pub(super) async fn list_offset_local(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
        read_committed: bool,
    ) -> Result<(i64, i64), PartitionError> {
        let log = self.leading(topic, partition)?.log.clone();
        match timestamp {
            -2 => Ok((log.log_start_offset() as i64, -1)),
            -1 if read_committed => Ok((log.last_stable_offset() as i64, -1)),
            -1 => Ok((log.log_end_offset() as i64, -1)),
            at => offset_at_time(&log, at, self.config.batch_decompressed_bytes_max).await,
        }
    }
}
