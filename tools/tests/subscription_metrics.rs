//! A subscription's metrics tell the truth when no consumer is attached, which is when lag
//! alerts matter: its lag follows the log while its consumers are gone, and after kill -9 and
//! a restart it is reported before any client asks for the subscription. Redeliveries are
//! counted.

mod common;

use common::native_client::produce;
use common::{eventually, field, http_get, sample, Broker};
use oxbow_client::{Client, Mode, SubscriptionType};
use std::time::Duration;

const TOPIC: &str = "watched";
const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn a_subscriptions_lag_is_reported_without_consumers_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || {
        let mut broker = Broker::start(&["--data-dir", data.to_str().unwrap()]);
        let ready = broker.wait_for("oxbow ready");
        (broker, field(&ready, "native"), field(&ready, "metrics"))
    };
    let lag = |metrics: &str| {
        let prefix = format!("oxbow_subscription_lag{{topic=\"{TOPIC}\",partition=\"0\"");
        sample(&http_get(metrics, "/metrics"), &prefix)
    };
    let (broker, native, metrics) = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(Client::builder().broker(&native).connect())
        .unwrap();
    rt.block_on(async {
        client.create_topic(TOPIC, 1).await.unwrap();
        produce(&client, TOPIC, 0..10, |_| None).await;
        let mut consumer = (client.consumer(TOPIC, "watch"))
            .kind(SubscriptionType::Exclusive)
            .mode(Mode::Reliable)
            .build()
            .await
            .unwrap();
        let mut received = Vec::new();
        while received.len() < 10 {
            let batch = tokio::time::timeout(PATIENCE, consumer.recv_batch(100))
                .await
                .expect("the broker delivers")
                .unwrap();
            received.extend(batch);
        }
        consumer.ack_all(&received[..4]).unwrap();
        // One nacked message comes back (and stays unacknowledged).
        consumer.nack(&received[4], Duration::ZERO).unwrap();
        let again = tokio::time::timeout(PATIENCE, consumer.recv_batch(100))
            .await
            .expect("the nacked message comes back")
            .unwrap();
        assert_eq!(again.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![4]);
    });
    let redelivered = sample(
        &http_get(&metrics, "/metrics"),
        &format!("oxbow_subscription_redelivered_total{{topic=\"{TOPIC}\""),
    );
    assert_eq!(redelivered, 1.0);
    eventually("the acknowledgements are persisted", PATIENCE, || {
        let subscriptions = rt.block_on(client.list_subscriptions(TOPIC)).ok()?;
        (subscriptions.into_iter()).find(|s| s.name == "watch" && s.persisted == 4)
    });
    // The consumer's connection closes: produced while nobody consumes, the lag grows with
    // the log.
    drop(client);
    let client = rt
        .block_on(Client::builder().broker(&native).connect())
        .unwrap();
    eventually("the consumer is detached", PATIENCE, || {
        let subscriptions = rt.block_on(client.list_subscriptions(TOPIC)).ok()?;
        (subscriptions.into_iter()).find(|s| s.name == "watch" && s.consumers == 0)
    });
    rt.block_on(produce(&client, TOPIC, 10..15, |_| None));
    eventually("the lag counts the new messages", PATIENCE, || {
        (lag(&metrics) == 11.0).then_some(())
    });

    drop(client);
    drop(broker);
    let (_broker, _native, metrics) = start();
    assert_eq!(lag(&metrics), 11.0, "reported after a restart, untouched");
}
