//! Helpers for tests that talk to the broker through `oxbow-client`.

use oxbow_client::{Acks, Client};

/// Produces messages `"m{i}"` for `i` in `range` (keyed by `key(i)` if given); returns the values.
pub async fn produce(
    client: &Client,
    topic: &str,
    range: std::ops::Range<u64>,
    key: impl Fn(u64) -> Option<String>,
) -> Vec<String> {
    let producer = client
        .producer(topic)
        .acks(Acks::All)
        .build()
        .await
        .unwrap();
    let mut pending = Vec::new();
    let mut values = Vec::new();
    for i in range {
        let value = format!("m{i}");
        let key = key(i);
        pending.push(
            producer
                .send(key.as_deref().map(str::as_bytes), value.as_bytes())
                .await
                .unwrap(),
        );
        values.push(value);
    }
    producer.flush().await.unwrap();
    for outcome in pending {
        assert!(outcome.await.unwrap().offset.is_some());
    }
    values
}
