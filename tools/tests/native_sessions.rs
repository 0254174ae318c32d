//! A consumer that comes back under its name, on a new connection while its old one is still
//! open (as after a half-open drop), replaces its stale session at once where one consumer is
//! active: an Exclusive subscription takes it instead of refusing it and redelivers what the
//! stale session had not acknowledged, a Failover subscription delivers to it instead of the
//! stale one; the stale session is told it was replaced. Another name is still refused. In a
//! Shared subscription, where consumers may share a name, a consumer that says it attaches
//! again after losing its connection (as the client does when it reattaches) replaces its
//! stale session too, and gets at once what that session held.

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

/// Frames from `stream` until `done` says enough; all of them.
async fn frames_until(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut bytes::BytesMut,
    mut done: impl FnMut(&[oxbow_core::native::ServerFrame]) -> bool,
) -> Vec<oxbow_core::native::ServerFrame> {
    use oxbow_core::native::{decode_frame, ServerFrame};
    use tokio::io::AsyncReadExt;
    let mut frames = Vec::new();
    loop {
        while let Some(frame) = decode_frame::<ServerFrame>(buffer, 1 << 30).unwrap() {
            frames.push(frame.control);
        }
        if done(&frames) {
            return frames;
        }
        let read = tokio::time::timeout(PATIENCE, stream.read_buf(buffer));
        assert!(
            read.await.expect("the broker answers").unwrap() > 0,
            "closed"
        );
    }
}

/// Offsets delivered in `frames`.
fn delivered(frames: &[oxbow_core::native::ServerFrame]) -> Vec<u64> {
    (frames.iter())
        .flat_map(|f| match f {
            oxbow_core::native::ServerFrame::Messages { messages, .. } => {
                messages.iter().map(|m| m.offset).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

/// A raw connection attached as Shared consumer `name` of subscription "shared", with
/// `permits` to spend.
async fn raw_shared_consumer(
    native: &str,
    name: &str,
    reattaching: bool,
) -> (tokio::net::TcpStream, bytes::BytesMut) {
    use oxbow_core::native::{encode_frame, ClientFrame, StartPosition, PROTOCOL_VERSION};
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(native).await.unwrap();
    let frames = [
        ClientFrame::Connect {
            version: PROTOCOL_VERSION,
            client_name: name.into(),
        },
        ClientFrame::Subscribe {
            request_id: 1,
            consumer_id: 1,
            topic: TOPIC.into(),
            subscription: "shared".into(),
            kind: SubscriptionType::Shared,
            mode: Mode::Reliable,
            consumer_name: name.into(),
            priority: 0,
            start: StartPosition::Earliest,
            partitions: None,
            reattaching,
        },
        ClientFrame::Flow {
            consumer_id: 1,
            partition: None,
            permits: 100,
        },
    ];
    for frame in frames {
        stream.write_all(&encode_frame(&frame, 0)).await.unwrap();
    }
    (stream, bytes::BytesMut::new())
}

#[test]
fn a_shared_consumer_attaching_again_replaces_its_own_stale_session_at_once() {
    let data = tempfile::tempdir().unwrap();
    // Neither the ack timeout nor the session timeout frees the stale session's messages
    // within the test's patience: only the replacement can.
    let config = data.path().join("oxbow.toml");
    std::fs::write(
        &config,
        "native_session_timeout_ms = 600000\n[subscriptions]\nack_timeout_ms = 600000\n",
    )
    .unwrap();
    let mut broker = Broker::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.path().join("d").to_str().unwrap(),
    ]);
    let native = field(&broker.wait_for("oxbow ready"), "native");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::builder().broker(&native).connect().await.unwrap();
        client.create_topic(TOPIC, 1).await.unwrap();
        produce(&client, TOPIC, 0..10, |_| None).await;
        // The stale session holds all ten, unacknowledged; its connection stays open.
        let (mut stale, mut stale_buffer) = raw_shared_consumer(&native, "worker-1", false).await;
        let frames =
            frames_until(&mut stale, &mut stale_buffer, |f| delivered(f).len() == 10).await;
        assert_eq!(delivered(&frames), (0..10).collect::<Vec<_>>());
        // Back under its name, saying it attaches again: it gets them at once.
        let (mut fresh, mut buffer) = raw_shared_consumer(&native, "worker-1", true).await;
        let frames = frames_until(&mut fresh, &mut buffer, |f| delivered(f).len() == 10).await;
        let again: BTreeSet<u64> = delivered(&frames).into_iter().collect();
        assert_eq!(again, (0..10).collect());
        let told = frames_until(&mut stale, &mut stale_buffer, |f| {
            f.iter()
                .any(|f| matches!(f, oxbow_core::native::ServerFrame::ConsumerClosed { .. }))
        })
        .await;
        assert!(format!("{told:?}").contains("replaced"), "{told:?}");
    });
    assert!(broker.signal(libc::SIGTERM).success());
}
