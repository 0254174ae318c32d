//! A Jepsen-style history check for one partition, done offline: what producers saw
//! acknowledged (value and offset) against what the log holds in the end. It names every
//! acknowledged write that is lost, moved off its acknowledged offset, stored twice, or
//! stored out of the order in which one producer's acknowledgements came.

use std::collections::BTreeMap;

/// One anomaly in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// Acknowledged at `offset`, absent from the log.
    Lost { value: String, offset: u64 },
    /// Acknowledged at `acked`, stored at `stored` instead.
    Moved {
        value: String,
        acked: u64,
        stored: u64,
    },
    /// Stored at several offsets (an idempotent producer must not duplicate).
    Duplicated { value: String, offsets: Vec<u64> },
    /// `later` was acknowledged after `earlier` by the same producer but stored before it.
    Reordered { earlier: String, later: String },
}

/// Writes a history (one `ack <producer> <offset> <value>` line per acknowledgement, then one
/// `log <offset> <value>` line per stored record) to `path`, for checking and for keeping.
pub fn record(path: &std::path::Path, acks: &[(usize, u64, String)], log: &[(u64, String)]) {
    let mut text = String::new();
    for (producer, offset, value) in acks {
        text.push_str(&format!("ack {producer} {offset} {value}\n"));
    }
    for (offset, value) in log {
        text.push_str(&format!("log {offset} {value}\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// Reads the history at `path` and returns its anomalies (none: the history is sound).
pub fn check(path: &std::path::Path) -> Vec<Anomaly> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut acks: Vec<(usize, u64, String)> = Vec::new();
    let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in text.lines() {
        match line.splitn(4, ' ').collect::<Vec<_>>()[..] {
            ["ack", producer, offset, value] => acks.push((
                producer.parse().unwrap(),
                offset.parse().unwrap(),
                value.into(),
            )),
            ["log", offset, value] => {
                let offset = offset.parse().unwrap();
                stored.entry(value.to_string()).or_default().push(offset);
            }
            _ => panic!("not a history line: {line}"),
        }
    }
    let mut anomalies = Vec::new();
    for offsets in stored.values_mut() {
        offsets.sort_unstable();
    }
    for (value, offsets) in &stored {
        if offsets.len() > 1 {
            let (value, offsets) = (value.clone(), offsets.clone());
            anomalies.push(Anomaly::Duplicated { value, offsets });
        }
    }
    // Per producer, the stored offset of its previous acknowledgement.
    let mut last: BTreeMap<usize, (u64, String)> = BTreeMap::new();
    for (producer, offset, value) in &acks {
        let Some(offsets) = stored.get(value) else {
            anomalies.push(Anomaly::Lost {
                value: value.clone(),
                offset: *offset,
            });
            continue;
        };
        if !offsets.contains(offset) {
            anomalies.push(Anomaly::Moved {
                value: value.clone(),
                acked: *offset,
                stored: offsets[0],
            });
        }
        let at = offsets[0];
        if let Some((before, earlier)) = last.get(producer) {
            if at < *before {
                let (earlier, later) = (earlier.clone(), value.clone());
                anomalies.push(Anomaly::Reordered { earlier, later });
            }
        }
        last.insert(*producer, (at, value.clone()));
    }
    anomalies
}

#[test]
fn the_checker_names_each_kind_of_anomaly_and_passes_a_sound_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history");
    let v = |s: &str| s.to_string();
    let acks = vec![(0, 0, v("a")), (0, 1, v("b")), (1, 2, v("c"))];
    let log = vec![(0, v("a")), (1, v("b")), (2, v("c"))];
    record(&path, &acks, &log);
    assert_eq!(check(&path), vec![]);

    let acks = vec![
        (0, 0, v("a")),
        (0, 1, v("b")),
        (0, 2, v("c")),
        (1, 3, v("d")),
        (1, 4, v("e")),
    ];
    // b lost, c moved (and stored before a: reordered), d stored twice.
    let log = vec![
        (0, v("c")),
        (1, v("a")),
        (3, v("d")),
        (4, v("e")),
        (5, v("d")),
    ];
    record(&path, &acks, &log);
    assert_eq!(
        check(&path),
        vec![
            Anomaly::Duplicated {
                value: v("d"),
                offsets: vec![3, 5]
            },
            Anomaly::Moved {
                value: v("a"),
                acked: 0,
                stored: 1
            },
            Anomaly::Lost {
                value: v("b"),
                offset: 1
            },
            Anomaly::Moved {
                value: v("c"),
                acked: 2,
                stored: 0
            },
            Anomaly::Reordered {
                earlier: v("a"),
                later: v("c")
            },
        ]
    );
}
