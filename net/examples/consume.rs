//! Consume with the tier and subscription the configuration names.
//!
//! `OXBOW_CONSUMER_TIER=buffered:256 OXBOW_SUBSCRIPTION_TYPE=shared \
//!  cargo run -p oxbow-client --example consume -- [TOPIC] [SUBSCRIPTION] [COUNT]`
//! or a TOML file: `OXBOW_CLIENT_CONFIG=client.toml` (see `oxbow_client::config`).

use oxbow_client::{Client, ClientConfig, ClientError};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let config = match std::env::var("OXBOW_CLIENT_CONFIG") {
        Ok(path) => ClientConfig::from_file(path)?,
        Err(_) => ClientConfig::from_env()?,
    };
    let topic = args.next().unwrap_or_else(|| "example".into());
    let subscription = args.next().unwrap_or_else(|| "example-sub".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let client = Client::from_config(&config).await?;
    let mut consumer = client
        .consumer(&topic, &subscription)
        .config(&config.consumer)?
        .build_tier(config.consumer.tier)
        .await?;
    let acker = consumer.acker();
    let mut received = 0;
    while received < count {
        let batch = consumer.next_batch().await?;
        received += batch.len();
        for message in &batch {
            println!(
                "{}/{} {}",
                message.partition,
                message.offset,
                String::from_utf8_lossy(&message.value)
            );
        }
        acker.ack_all(&batch)?;
    }
    Ok(())
}
