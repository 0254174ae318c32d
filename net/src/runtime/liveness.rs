//! Whether every shard still takes work: the question behind the systemd watchdog. A shard
//! stuck in a loop or blocked in a system call stops answering, and the service manager
//! restarts the broker instead of leaving its partitions unserved.

use crate::shard::{RemoteWork, ShardMessage};
use std::time::{Duration, Instant};

/// Asks every shard of a running node to answer; cheap to clone into another thread. Drop it
/// before stopping the node: it holds the shards' inboxes.
#[derive(Clone)]
pub struct ShardLiveness {
    inboxes: Vec<flume::Sender<ShardMessage>>,
}

impl ShardLiveness {
    pub(super) fn new(inboxes: Vec<flume::Sender<ShardMessage>>) -> ShardLiveness {
        ShardLiveness { inboxes }
    }

    /// Whether every shard ran an empty task within `timeout` (all are asked at once; a full
    /// inbox counts against the same deadline).
    pub fn all_answer_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut answers = Vec::with_capacity(self.inboxes.len());
        for inbox in &self.inboxes {
            let (reply, answer) = flume::bounded(1);
            let work: RemoteWork = Box::new(move |_shard| {
                Box::pin(async move {
                    let _ = reply.send(());
                })
            });
            if inbox
                .send_deadline(ShardMessage::Run(work), deadline)
                .is_err()
            {
                return false;
            }
            answers.push(answer);
        }
        answers
            .iter()
            .all(|answer| answer.recv_deadline(deadline).is_ok())
    }
}
