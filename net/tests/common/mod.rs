//! What the in-process shard tests share.

use oxbow_cluster::metadata_group::MetadataNode;
use oxbow_cluster::Metadata;
use oxbow_core::BrokerConfig;
use oxbow_net::shard::{mesh, Shard};
use std::rc::Rc;
use std::sync::Arc;

/// Shard 0 of a one-shard broker with `config` (its data directory prepared for direct I/O),
/// serving its inbox, with its node of the metadata group.
pub async fn shard_with_node(config: BrokerConfig) -> (Rc<Shard>, MetadataNode) {
    oxbow_storage::prepare_shard_io(&config.data_dir, "test")
        .await
        .unwrap();
    let (senders, mut inboxes) = mesh(1, 64);
    let shard = Rc::new(Shard::new(
        0,
        config,
        senders,
        Arc::new(Metadata::default()),
    ));
    let node = oxbow_net::runtime::start_metadata_node(&shard.config, None)
        .await
        .unwrap();
    shard.set_metadata_node(node.clone());
    glommio::spawn_local(shard.clone().serve_inbox(inboxes.remove(0))).detach();
    (shard, node)
}
