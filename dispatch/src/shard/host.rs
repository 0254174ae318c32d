//! One partition as its owner shard holds it: the log, its subscriptions, and (with
//! replication) its replica state. Everything about a partition is reached through here.

use super::replica::Role;
use crate::subscriptions::{DriverSettings, SubscriptionHost};
use oxbow_storage::Partition;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

/// A partition owned by this shard.
pub struct PartitionHost {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: u32,
    /// Its log.
    pub log: Rc<Partition>,
    /// Its subscriptions.
    pub subscriptions: SubscriptionHost,
    /// What this node does for it among its replicas.
    pub role: RefCell<Role>,
}

impl PartitionHost {
    /// Hosts an open log; its subscriptions keep their cursors under `data_dir`.
    pub fn new(
        topic: Arc<str>,
        partition: u32,
        log: Partition,
        data_dir: &Path,
        settings: DriverSettings,
    ) -> PartitionHost {
        let log = Rc::new(log);
        PartitionHost {
            subscriptions: SubscriptionHost::new(
                topic.clone(),
                partition,
                data_dir,
                log.clone(),
                settings,
            ),
            topic,
            partition,
            log,
            role: RefCell::default(),
        }
    }

    /// Stops the subscriptions (their cursors written), then writes, syncs and closes the log.
    pub async fn close(&self) {
        // A follower task stops; waiting acks=all appends fail.
        *self.role.borrow_mut() = Role::Alone;
        self.subscriptions.close().await;
        self.log.close().await;
    }
}
