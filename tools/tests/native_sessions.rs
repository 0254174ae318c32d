//! A consumer that comes back under its name, on a new connection while its old one is still
//! open (as after a half-open drop), replaces its stale session at once where one consumer is
//! active: an Exclusive subscription takes it instead of refusing it and redelivers what the
//! stale session had not acknowledged, a Failover subscription delivers to it instead of the
//! stale one; the stale session is told it was replaced. Another name is still refused.

mod common;

use common::native_client::produce;
use common::{eventually, field, Broker};
use oxbow_client::{Client, ErrorCode, Mode, SubscriptionType};
use std::collections::BTreeSet;
use std::time::Duration;

const TOPIC: &str = "sessions";
const PATIENCE: Duration = Duration::from_secs(30);

async fn consumer(
    client: &Client,
    subscription: &str,
    kind: SubscriptionType,
    name: &str,
) -> Result<oxbow_client::Consumer, oxbow_client::ClientError> {
    (client.consumer(TOPIC, subscription))
        .kind(kind)
        .mode(Mode::Reliable)
        .name(name)
        .build()
        .await
}

/// Receives until `count` messages came; their offsets.
async fn receive(
    consumer: &mut oxbow_client::Consumer,
    count: usize,
) -> Vec<oxbow_client::Message> {
    let mut received = Vec::new();
    while received.len() < count {
        let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(100))
            .await
            .expect("the broker delivers")
            .unwrap();
        received.extend(batch);
    }
    received
}

#[test]
fn a_consumer_back_under_its_name_replaces_its_stale_session() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&["--data-dir", data.path().to_str().unwrap()]);
    let native = field(&broker.wait_for("oxbow ready"), "native");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect = || {
        rt.block_on(Client::builder().broker(&native).connect())
            .unwrap()
    };
    let (old, new) = (connect(), connect());
    rt.block_on(async {
        old.create_topic(TOPIC, 1).await.unwrap();
        produce(&old, TOPIC, 0..10, |_| None).await;
    });

    // Exclusive: the stale session acknowledged 3 of 10.
    let exclusive = SubscriptionType::Exclusive;
    let mut stale = rt
        .block_on(consumer(&old, "ex", exclusive, "app-1"))
        .unwrap();
    let received = rt.block_on(receive(&mut stale, 10));
    stale.ack_all(&received[..3]).unwrap();
    eventually("the acknowledgements are taken", PATIENCE, || {
        let listed = rt.block_on(old.list_subscriptions(TOPIC)).ok()?;
        listed
            .iter()
            .any(|s| s.name == "ex" && s.cursor == 3)
            .then_some(())
    });
    let mut fresh = rt
        .block_on(consumer(&new, "ex", exclusive, "app-1"))
        .unwrap();
    let again: BTreeSet<u64> = rt
        .block_on(receive(&mut fresh, 7))
        .iter()
        .map(|m| m.offset)
        .collect();
    assert_eq!(again, (3..10).collect());
    let told = rt.block_on(async { tokio::time::timeout(PATIENCE, stale.recv()).await });
    assert!(
        matches!(&told, Ok(Err(e)) if e.to_string().contains("replaced")),
        "the stale session is told: {told:?}"
    );
    let other = rt.block_on(consumer(&new, "ex", exclusive, "app-2"));
    let refused = other.err().expect("another name is still refused");
    assert_eq!(refused.code(), Some(ErrorCode::ConsumerBusy), "{refused}");

    // Failover: deliveries go to the new session at once.
    let failover = SubscriptionType::Failover;
    let mut stale = rt
        .block_on(consumer(&old, "fo", failover, "primary"))
        .unwrap();
    rt.block_on(receive(&mut stale, 10));
    let mut fresh = rt
        .block_on(consumer(&new, "fo", failover, "primary"))
        .unwrap();
    let again = rt.block_on(receive(&mut fresh, 10));
    assert_eq!(
        again.len(),
        10,
        "everything unacknowledged comes to the new session"
    );
    assert!(broker.signal(libc::SIGTERM).success());
}
