//! Produce keyed messages with the native client.
//!
//! `cargo run -p oxbow-client --example produce -- [BROKER] [TOPIC] [COUNT]`
//! (defaults: 127.0.0.1:6650, example, 1000). Settings also come from the environment
//! (`OXBOW_BROKER`, `OXBOW_ACKS`, `OXBOW_LINGER_MS`).

use oxbow_client::{Client, ClientConfig, ClientError, ErrorCode};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let mut config = ClientConfig::from_env()?;
    if let Some(broker) = args.next() {
        config.broker = broker;
    }
    let topic = args.next().unwrap_or_else(|| "example".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let client = Client::from_config(&config).await?;
    match client.create_topic(&topic, 4).await {
        Err(e) if e.code() != Some(ErrorCode::TopicExists) => return Err(e),
        _ => {}
    }
    let producer = client
        .producer(&topic)
        .config(&config.producer)?
        .build()
        .await?;
    let mut pending = Vec::new();
    for i in 0..count {
        let key = format!("customer-{}", i % 16);
        let value = format!("order {i}");
        pending.push(
            producer
                .send(Some(key.as_bytes()), value.as_bytes())
                .await?,
        );
    }
    producer.flush().await?;
    for outcome in pending {
        outcome.await?;
    }
    println!("produced {count} messages to {topic}");
    Ok(())
}
