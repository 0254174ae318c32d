//! Changes the metadata group applies without topic administration proposing them (another
//! node's, the controller's) are carried out by shard 0 in order: a created topic's partitions
//! open and every shard serves it; a deleted topic is forgotten and its files go; a topic
//! placed on another broker opens nothing here and its requests name the leader.

mod common;

use oxbow_cluster::{MetadataChange, TopicId, TopicMeta};
use oxbow_core::BrokerConfig;
use oxbow_net::shard::{Acks, PartitionError, Shard};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A bound on a wait that must end (a broken follower would otherwise hang the test).
async fn served(shard: &Shard, version: u64) {
    let wait = async {
        shard.serves_version(version).await;
        Ok(())
    };
    glommio::timer::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("version {version} not served within 30 s"));
}

#[test]
fn changes_from_the_group_open_and_drop_partitions_on_this_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let config = BrokerConfig {
                data_dir: data.clone(),
                ..BrokerConfig::default()
            };
            let (shard, node) = common::shard_with_node(config).await;
            glommio::spawn_local(shard.clone().follow_metadata()).detach();

            let topic = TopicMeta::on_one_broker(
                "elsewhere".into(),
                TopicId([5; 16]),
                2,
                0,
                BTreeMap::new(),
            );
            let created = node
                .propose(MetadataChange::CreateTopic(topic))
                .await
                .unwrap();
            served(&shard, created.version).await;
            assert_eq!(shard.partition_count("elsewhere"), Some(2));
            for partition in 0..2 {
                assert!(shard.local("elsewhere", partition).is_ok());
            }
            assert!(data.join("elsewhere").join("1").is_dir());

            let delete = MetadataChange::DeleteTopic {
                name: "elsewhere".into(),
            };
            let deleted = node.propose(delete).await.unwrap();
            served(&shard, deleted.version).await;
            assert_eq!(shard.partition_count("elsewhere"), None);
            // The files go after every shard has forgotten the topic, under the admin lock: a
            // topic change after it waits for them to be gone.
            shard
                .create_topic("after".into(), 1, Vec::new())
                .await
                .unwrap();
            assert!(shard.local("elsewhere", 0).is_err());
            assert!(!data.join("elsewhere").exists());

            // A topic placed on another broker: nothing opens here, and requests for it are
            // told who leads it.
            let away =
                TopicMeta::on_one_broker("away".into(), TopicId([6; 16]), 1, 7, BTreeMap::new());
            let placed = node
                .propose(MetadataChange::CreateTopic(away))
                .await
                .unwrap();
            served(&shard, placed.version).await;
            assert_eq!(shard.partition_count("away"), Some(1));
            assert!(matches!(
                shard.local("away", 0),
                Err(PartitionError::NotLeader { leader: 7 })
            ));
            assert!(matches!(
                shard.local("away", 1),
                Err(PartitionError::UnknownTopicOrPartition)
            ));
            assert!(!data.join("away").exists());
            node.close().await;
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Without the follower running: topic administration's own change carries out everything the
/// group applied before it too, including a name deleted and created again with a new id (the
/// old log goes before the new one opens).
#[test]
fn an_administrative_change_carries_out_what_the_group_applied_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let config = BrokerConfig {
                data_dir: data.clone(),
                ..BrokerConfig::default()
            };
            let (shard, node) = common::shard_with_node(config).await;

            let topic =
                |id| TopicMeta::on_one_broker("x".into(), TopicId([id; 16]), 1, 0, BTreeMap::new());
            shard
                .create_topic("first".into(), 1, Vec::new())
                .await
                .unwrap();
            node.propose(MetadataChange::CreateTopic(topic(1)))
                .await
                .unwrap();
            shard
                .create_topic("second".into(), 1, Vec::new())
                .await
                .unwrap();
            let batch = || {
                let mut builder = oxbow_core::BatchBuilder::new(0);
                builder.push(None, Some(b"old"), 0);
                vec![builder.build()]
            };
            let x: Arc<str> = Arc::from("x");
            let stored = shard.send_produce(x.clone(), 0, batch(), Acks::All).await;
            assert!(stored.recv_async().await.unwrap().is_ok(), "x was opened");
            assert_eq!(shard.local("x", 0).unwrap().log.log_end_offset(), 1);

            let delete = MetadataChange::DeleteTopic { name: "x".into() };
            node.propose(delete).await.unwrap();
            node.propose(MetadataChange::CreateTopic(topic(2)))
                .await
                .unwrap();
            shard
                .create_topic("third".into(), 1, Vec::new())
                .await
                .unwrap();
            let served = shard.metadata();
            assert_eq!(served.topic("x").unwrap().id, TopicId([2; 16]));
            let host = shard.local("x", 0).expect("the new x is open");
            assert_eq!(host.log.log_end_offset(), 0, "nothing of the old x");
            node.close().await;
        })
        .unwrap()
        .join()
        .unwrap();
}
