//! The log core on its own: no executor, no disk I/O, plain ids as waiters.

use super::*;
use crate::frame::FrameHeader;
use crate::io::{Disk, SimDisk};
use crate::{AppendError, Appended};
use oxbow_core::{BatchBuilder, FlushPolicy};
use std::path::Path;

type Core = LogCore<u32, u32>;

fn segment(base: u64, now_ms: i64) -> Segment {
    let disk = SimDisk::new();
    disk.create_dir_all(Path::new("/p")).unwrap();
    futures_lite::future::block_on(Segment::create(&disk, Path::new("/p"), base, now_ms)).unwrap()
}

fn core(flush: FlushPolicy) -> Core {
    let config = LogConfig {
        segment_bytes_max: 64 * 1024,
        flush,
        batch_bytes_max: 16 * 1024,
        write_buffer_bytes: 64 * 1024,
        append_queue_bytes_max: 32 * 1024,
        ..LogConfig::default()
    };
    LogCore::new(
        config,
        vec![segment(0, 0)],
        0,
        ProducerState::default(),
        Default::default(),
        LeaderEpochs::default(),
        0,
    )
}

fn batch(records: usize) -> RecordBatch {
    let mut builder = BatchBuilder::new(0);
    for _ in 0..records {
        builder.push(None, Some(&[7; 100]), 0);
    }
    builder.build()
}

/// What the writer would do with a round: frames at consecutive positions.
fn write(core: &mut Core, round: &[Pending<u32>]) {
    let mut position = core.active().log_bytes;
    let frames: Vec<(FrameHeader, u64)> = round
        .iter()
        .map(|p| {
            let header = FrameHeader {
                frame_len: frame_len(&p.batch) as u32,
                crc: 0,
                base_offset: p.batch.base_offset(),
                last_offset_delta: p.batch.last_offset_delta() as u32,
                max_timestamp: p.batch.max_timestamp(),
            };
            let at = position;
            position += header.frame_len as u64;
            (header, at)
        })
        .collect();
    core.round_written(&frames, position);
}

fn queued(admitted: Admitted) -> Appended {
    match admitted {
        Admitted::Queued(appended) => appended,
        Admitted::Duplicate(_) => panic!("not a duplicate"),
    }
}

#[test]
fn appends_queued_together_form_one_round_and_become_visible_when_durable() {
    let mut core = core(FlushPolicy::Always);
    for (i, records) in [2, 3, 1].into_iter().enumerate() {
        let appended = queued(core.append(batch(records), i as u32).unwrap());
        assert_eq!(appended.base_offset, [0, 2, 5][i]);
    }
    let Work::Write(round) = core.next_work(0, 0) else {
        panic!("a round is due")
    };
    assert_eq!(
        round.len(),
        3,
        "group commit: one round for everything queued"
    );
    write(&mut core, &round);
    assert!(core.sync_before_ack());
    assert_eq!(
        core.visible_end(),
        0,
        "written is not yet durable under always"
    );
    assert_eq!(core.round_durable(round), [0, 1, 2]);
    assert_eq!((core.durable_end(), core.visible_end()), (6, 6));
    // Replication caps what readers see at the high watermark.
    core.set_high_watermark(4);
    assert_eq!((core.durable_end(), core.visible_end()), (6, 4));
    assert!(matches!(core.next_work(0, 0), Work::Idle(None)));
}

#[test]
fn a_failed_write_rejects_the_queue_and_hands_its_offsets_out_again() {
    let mut core = core(FlushPolicy::Always);
    core.append(batch(1), 1).unwrap();
    let Work::Write(round) = core.next_work(0, 0) else {
        panic!()
    };
    core.append(batch(1), 2).unwrap();
    assert_eq!(core.round_failed(round), [1, 2]);
    assert_eq!(queued(core.append(batch(1), 3).unwrap()).base_offset, 0);
    let (queued, truncation) = core.stop("EIO".into());
    assert_eq!((queued, truncation), (vec![3], None));
    assert_eq!(
        core.append(batch(1), 4),
        Err(AppendError::Stopped("EIO".into()))
    );
    assert!(matches!(core.next_work(0, 0), Work::Close));
}

#[test]
fn rolls_are_decided_by_size_and_by_the_age_passed_in() {
    let mut core = core(FlushPolicy::Never);
    core.append(batch(1), 1).unwrap();
    let Work::Write(round) = core.next_work(0, 0) else {
        panic!()
    };
    write(&mut core, &round);
    core.round_durable(round);
    core.append(batch(1), 2).unwrap();
    let age = core.config.segment_age_max_ms as i64;
    let Work::Write(round) = core.next_work(age - 1, 0) else {
        panic!("younger than segment_age_max_ms: no roll")
    };
    write(&mut core, &round);
    core.round_durable(round);
    core.append(batch(1), 3).unwrap();
    assert!(matches!(core.next_work(age, 0), Work::Roll(2)));
    let seal = core.rolled(segment(2, age), age);
    assert_eq!((seal.base_offset, core.seals_in_flight()), (0, 1));
    assert!(
        !core.active_dir_synced(),
        "the new segment's name is not durable yet"
    );
    core.sealed(0);
    assert_eq!(core.seals_in_flight(), 0);
}

#[test]
fn admission_keeps_arrival_order_when_the_queue_is_full() {
    let mut core = core(FlushPolicy::Always);
    core.append(batch(100), 1).unwrap();
    core.append(batch(100), 2).unwrap();
    core.append(batch(100), 3).unwrap();
    assert!(!core.may_enter(None), "queue over append_queue_bytes_max");
    let first = core.join_line();
    let second = core.join_line();
    let Work::Write(round) = core.next_work(0, 0) else {
        panic!()
    };
    assert!(core.may_enter(Some(first)) && !core.may_enter(Some(second)));
    assert!(!core.may_enter(None), "a newcomer queues behind the line");
    assert!(
        core.leave_line(first),
        "the head left: the others look again"
    );
    assert!(core.may_enter(Some(second)));
    drop(round);
}

#[test]
fn a_follower_keeps_the_leaders_offsets_and_epochs_and_checks_continuity() {
    let mut core = core(FlushPolicy::Always);
    let leaders = batch(3).with_base_offset(0, 4);
    assert_eq!(core.append_replicated(leaders, 1).unwrap().last_offset, 2);
    let overlap = batch(1).with_base_offset(2, 4);
    assert_eq!(
        core.append_replicated(overlap, 2),
        Err(AppendError::NotContiguous {
            expected: 3,
            got: 2
        })
    );
    // A leader's compaction leaves gaps; the follower keeps them.
    let after_gap = batch(1).with_base_offset(5, 4);
    assert_eq!(core.append_replicated(after_gap, 2).unwrap().last_offset, 5);
    let stale = batch(1).with_base_offset(6, 3);
    assert!(matches!(
        core.append_replicated(stale, 3),
        Err(AppendError::StaleEpoch {
            epoch: 3,
            latest: 4
        })
    ));
    core.append_replicated(batch(1).with_base_offset(6, 6), 4)
        .unwrap();
    assert_eq!(core.epochs().entries(), [(4, 0), (6, 6)]);
    assert!(core.take_epochs_if_dirty().is_some());
    assert!(core.take_epochs_if_dirty().is_none());
}
