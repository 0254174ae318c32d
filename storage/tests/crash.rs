//! Property test of crash recovery on real files: append, damage the file the way a crash can
//! (cut at any byte, zero a range, flip a byte, all beyond the acknowledged end), reopen, and
//! check the recovered log is exactly a prefix of what was written that keeps every
//! acknowledged append. Cases: PROPTEST_CASES (default 48).

mod common;

use common::*;
use oxbow_core::FlushPolicy;
use oxbow_storage::{OpenOptions, Partition};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Damage {
    Cut,
    Zero(u16),
    Flip(u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::Cut),
        (1u16..5000).prop_map(Damage::Zero),
        (1u8..=255).prop_map(Damage::Flip),
    ]
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    files_with(dir, "log").pop().expect("a segment")
}

fn check_case(acked: u64, extra: u64, damage: Damage, at: f64) {
    on_shard(move |dir| async move {
        let config = small_config(FlushPolicy::Never);
        let open = || Partition::open(&dir, config.clone(), OpenOptions::default());
        let partition = open().await.unwrap();
        for i in 0..acked {
            partition.append(batch(i)).await.unwrap();
        }
        partition.close().await;
        // Reopening trims the active segment to its frames: its length is the durable end.
        let partition = open().await.unwrap();
        let durable_segment = last_segment(&dir);
        let durable_len = std::fs::metadata(&durable_segment).unwrap().len();
        for i in acked..acked + extra {
            partition.append(batch(i)).await.unwrap();
        }
        partition.close().await;

        // A crash tears only what was not yet acknowledged: the last segment past that end.
        let victim = last_segment(&dir);
        let floor = if victim == durable_segment {
            durable_len
        } else {
            0
        };
        let len = std::fs::metadata(&victim).unwrap().len();
        if len > floor {
            let pos = floor + ((len - floor) as f64 * at) as u64;
            let mut bytes = std::fs::read(&victim).unwrap();
            match damage {
                Damage::Cut => bytes.truncate(pos as usize),
                Damage::Zero(n) => {
                    let end = (pos as usize + n as usize).min(bytes.len());
                    bytes[pos as usize..end].fill(0);
                }
                Damage::Flip(mask) => bytes[pos as usize] ^= mask,
            }
            std::fs::write(&victim, bytes).unwrap();
        }

        let partition = open().await.unwrap();
        let recovered = read_all(&partition, 0).await;
        let kept = recovered.len() as u64;
        assert!(
            kept >= acked,
            "lost acknowledged appends: kept {kept} of {acked}"
        );
        assert!(kept <= acked + extra, "invented batches: {kept}");
        let mut offset = 0;
        for (i, stored) in recovered.iter().enumerate() {
            assert_eq!(
                stored.bytes(),
                &expected_bytes(i as u64, offset),
                "batch {i}"
            );
            offset += records_in(i as u64);
        }
        assert_eq!(partition.log_end_offset(), offset);
        // The log goes on from exactly where recovery ended.
        assert_eq!(
            partition.append(batch(kept)).await.unwrap().base_offset,
            offset
        );
        partition.close().await;
        let partition = open().await.unwrap();
        assert_eq!(read_all(&partition, 0).await.len() as u64, kept + 1);
        partition.close().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn recovery_keeps_an_exact_prefix_with_every_acknowledged_append(
        acked in 0u64..80,
        extra in 1u64..40,
        damage in damage(),
        at in 0.0f64..1.0,
    ) {
        check_case(acked, extra, damage, at);
    }
}
