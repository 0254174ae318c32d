//! The controller: on the node that leads the metadata group, proposes what follows from the
//! brokers' liveness (fencing, unfencing, new partition leaders), completes reassignments
//! whose new replicas are in sync, and, every
//! `cluster.leader_imbalance_check_interval_ms`, hands leadership back to preferred replicas.
//! Every node runs it on shard 0; it acts only while its node leads, so a new leader takes
//! over at its next look.

use super::Shard;
use oxbow_cluster::controller::{liveness_changes, preferred_leader_elections, Liveness};
use oxbow_cluster::metadata_group::{broker_id, raft_id};
use std::rc::Rc;
use std::time::{Duration, Instant};

impl Shard {
    /// Looks every `interval` while the node runs (shard 0).
    pub async fn run_controller(self: Rc<Self>, interval: Duration) {
        let Some(node) = self.metadata_node() else {
            return;
        };
        let me = self.config.node_id;
        let session = Duration::from_millis(self.config.cluster.broker_session_timeout_ms);
        let mut liveness = Liveness::new(session);
        let settings = &self.config.cluster;
        let rebalance_every = Duration::from_millis(settings.leader_imbalance_check_interval_ms);
        let mut rebalanced = Instant::now();
        loop {
            glommio::timer::sleep(interval).await;
            let now = Instant::now();
            liveness.observe_leader(broker_id(node.status().leader), me, now);
            if !liveness.leading() {
                continue;
            }
            let metadata = node.metadata();
            let live = liveness.live(&metadata, me, now, |b| node.last_heard(raft_id(b)));
            let mut changes = liveness_changes(&metadata, &live);
            changes.extend(metadata.reassignments_done());
            if changes.is_empty()
                && settings.auto_leader_rebalance
                && now.duration_since(rebalanced) >= rebalance_every
            {
                rebalanced = now;
                let imbalance = settings.leader_imbalance_per_broker_percentage;
                changes = preferred_leader_elections(&metadata, &live, imbalance);
            }
            for change in changes {
                let what = format!("{change:?}");
                match self.change_cluster(change).await {
                    Ok(()) => tracing::info!(change = %what, "controller change committed"),
                    Err(e) => {
                        // The view it came from is stale now; the next look starts afresh.
                        tracing::warn!(change = %what, error = %e, "controller change failed");
                        break;
                    }
                }
            }
        }
    }
}
