//! A native producer outlives a restart of its broker: its next batches open a new connection
//! (after fresh metadata) and are acknowledged at the offsets that follow, with nothing lost.
//! Consumers do not reconnect yet (issue 17); they end with an error the application sees.

mod common;

use common::{fixed_port_args, Broker};
use oxbow_client::{Acks, Client, SubscriptionType};
use std::collections::BTreeSet;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_producer_sends_again_after_its_broker_restarts_on_the_same_address() {
    let data = tempfile::tempdir().unwrap();
    let (args, addrs) = fixed_port_args(data.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut broker = Broker::start_exactly(None, &args);
    broker.wait_for("oxbow ready");
    let rt = runtime();
    let client = rt
        .block_on(Client::builder().broker(&addrs[1]).connect())
        .unwrap();
    rt.block_on(client.create_topic("survivor", 2)).unwrap();
    let producer = rt
        .block_on(client.producer("survivor").acks(Acks::All).build())
        .unwrap();
    let send = |from: usize| {
        rt.block_on(async {
            let mut pending = Vec::new();
            for i in from..from + 10 {
                let key = format!("k{}", i % 2);
                let value = format!("v{i}");
                pending.push(
                    producer
                        .send(Some(key.as_bytes()), value.as_bytes())
                        .await?,
                );
            }
            let mut delivered = Vec::new();
            for sent in pending {
                let d = sent.await?;
                delivered.push((d.partition, d.offset.unwrap()));
            }
            Ok::<_, oxbow_client::ClientError>(delivered)
        })
    };
    let before = send(0).unwrap();

    assert!(broker.signal(libc::SIGTERM).success());
    let mut again = Broker::start_exactly(None, &args);
    again.wait_for("oxbow ready");
    let after = send(10).expect("the producer reconnects");
    let offsets: BTreeSet<(u32, u64)> = before.iter().chain(&after).copied().collect();
    assert_eq!(offsets.len(), 20, "every message at its own offset");
    for partition in 0..2 {
        let mine: Vec<u64> = (offsets.iter())
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(mine, (0..mine.len() as u64).collect::<Vec<_>>(), "no gap");
    }

    // Everything acknowledged is there, read by a consumer on a fresh client.
    let values = rt.block_on(async {
        let client = Client::builder().broker(&addrs[1]).connect().await.unwrap();
        let mut consumer = client
            .consumer("survivor", "check")
            .kind(SubscriptionType::Exclusive)
            .build()
            .await
            .unwrap();
        let mut values = BTreeSet::new();
        while values.len() < 20 {
            let batch = tokio::time::timeout(Duration::from_secs(30), consumer.recv_batch(100))
                .await
                .expect("all 20 are delivered")
                .unwrap();
            consumer.ack_all(&batch).unwrap();
            values.extend(
                batch
                    .iter()
                    .map(|m| String::from_utf8(m.value.to_vec()).unwrap()),
            );
        }
        values
    });
    let expected: BTreeSet<String> = (0..20).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected);
}
