//! The consumer library as an application uses it: messages typed through serde on every
//! tier, with a message that does not deserialize handed to the application (to nack or
//! acknowledge) instead of a panic or a silent skip.

mod common;

use common::{runtime, start_native_broker};
use oxbow_client::{Client, ClientError, Json, Receive, Tier, Utf8};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Bound on any one wait; the tests wait on messages, not on time.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
}

#[test]
fn every_tier_delivers_typed_messages_and_hands_over_one_that_does_not_deserialize() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_native_broker(dir.path(), "");
    runtime().block_on(async {
        let client = Client::builder().broker(&addr).connect().await.unwrap();
        client.create_topic("orders", 2).await.unwrap();
        let orders = client.producer("orders").build().await.unwrap();
        let orders = orders.typed(Utf8, Json::<Order>::new());
        let mut sent = BTreeMap::new();
        for id in 0..20 {
            let order = Order {
                id,
                item: format!("item {id}"),
            };
            let customer = format!("customer-{}", id % 3);
            let pending = orders.send(Some(customer.as_str()), &order).await.unwrap();
            pending.await.unwrap();
            sent.insert(id, (customer, order));
        }
        // A message from an application that does not write JSON.
        let raw = client.producer("orders").build().await.unwrap();
        raw.send(Some(b"customer-0"), b"{not json").await.unwrap();
        raw.flush().await.unwrap();

        let tiers = [
            ("stream", Tier::Stream),
            ("buffered", Tier::Buffered(4)),
            ("dedicated", Tier::Dedicated),
        ];
        for (name, tier) in tiers {
            let consumer = client
                .consumer("orders", name)
                .build_tier(tier)
                .await
                .unwrap();
            let mut consumer = consumer.typed(Utf8, Json::<Order>::new());
            let acker = consumer.acker();
            let mut received = BTreeMap::new();
            let mut undecodable = Vec::new();
            while received.len() < sent.len() || undecodable.len() < 2 {
                let next = tokio::time::timeout(PATIENCE, consumer.recv()).await;
                match next.unwrap_or_else(|_| panic!("{name}: not everything delivered")) {
                    Ok(message) => {
                        acker.ack(&message).unwrap();
                        let key = message.key.clone().expect("keyed");
                        received.insert(message.value.id, (key, message.value));
                    }
                    Err(ClientError::Undeserializable { reason, message }) => {
                        assert!(reason.starts_with("value: "), "{reason}");
                        assert_eq!(&message.value[..], b"{not json");
                        // Nacked the first time: it comes again, counted.
                        match message.redeliveries {
                            0 => acker.nack(&message, Duration::ZERO).unwrap(),
                            _ => acker.ack(&message).unwrap(),
                        }
                        undecodable.push(message.redeliveries);
                    }
                    Err(e) => panic!("{name}: {e}"),
                }
            }
            assert_eq!(received, sent, "{name}");
            assert_eq!(undecodable, [0, 1], "{name}");
        }
    });
}
