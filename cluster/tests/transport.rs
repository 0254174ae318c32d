//! The cluster transport over real UDP on loopback: frames arrive whole with a receipt, a node
//! without the cluster's certificate is refused in both directions, frames beyond the limit
//! are refused, and the fault switch cuts links both ways until healed.

use bytes::Bytes;
use futures_lite::future::block_on;
use oxbow_cluster::transport::{ClusterTls, Inbound, Transport, TransportError, TransportLimits};
use oxbow_storage::ordered::all_in_order;
use std::collections::BTreeSet;
use std::time::Duration;

const LIMITS: TransportLimits = TransportLimits {
    frame_bytes_max: 64 * 1024,
    connect_timeout: Duration::from_secs(5),
    frame_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(10),
    socket_buffer_bytes: 1 << 20,
};

fn node(tls: &ClusterTls) -> (Transport, flume::Receiver<Inbound>) {
    let (inbound, received) = flume::unbounded();
    let listen = "127.0.0.1:0".parse().unwrap();
    let transport = Transport::start(listen, tls, LIMITS, inbound).expect("transport starts");
    (transport, received)
}

fn frame(i: u32) -> Bytes {
    Bytes::from(format!("frame {i} {}", "x".repeat(i as usize * 37 % 3000)))
}

#[test]
fn frames_arrive_whole_between_members_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The first node generates the files; the second reads the copies.
    let first_tls = ClusterTls::read_or_generate(dir.path()).unwrap();
    let copied_tls = ClusterTls::read(dir.path()).unwrap();
    let (one, _one_received) = node(&first_tls);
    let (two, two_received) = node(&copied_tls);
    one.set_peer(2, two.local_addr());
    two.set_peer(1, one.local_addr());

    let sent: BTreeSet<Bytes> = (0..200).map(frame).collect();
    let deliveries: Vec<_> = sent.iter().map(|f| one.deliver(2, f.clone())).collect();
    for delivered in block_on(all_in_order(deliveries)) {
        delivered.expect("delivered");
    }
    let got: Vec<Inbound> = two_received.try_iter().collect();
    assert!(got.iter().all(|i| i.from == one.local_addr()));
    let got: BTreeSet<Bytes> = got.into_iter().map(|i| i.frame).collect();
    assert_eq!(got, sent);

    // Another CA: its node cannot reach a member, nor a member it.
    let (stranger, stranger_received) = node(&ClusterTls::generate().unwrap());
    stranger.set_peer(2, two.local_addr());
    two.set_peer(9, stranger.local_addr());
    let refused = block_on(stranger.deliver(2, frame(1)));
    assert!(
        matches!(refused, Err(TransportError::Connect { .. })),
        "{refused:?}"
    );
    let refused = block_on(two.deliver(9, frame(1)));
    assert!(
        matches!(refused, Err(TransportError::Connect { .. })),
        "{refused:?}"
    );
    assert!(two_received.try_recv().is_err());
    assert!(stranger_received.try_recv().is_err());

    // Too large: the receiver refuses the stream, nothing arrives.
    let huge = Bytes::from(vec![7u8; LIMITS.frame_bytes_max + 1]);
    let refused = block_on(one.deliver(2, huge));
    assert!(
        matches!(refused, Err(TransportError::Stream { .. })),
        "{refused:?}"
    );
    assert!(two_received.try_recv().is_err());
    assert!(
        block_on(one.deliver(2, frame(3))).is_ok(),
        "the link still works"
    );
    assert_eq!(two_received.try_recv().unwrap().frame, frame(3));
}

#[test]
fn the_fault_switch_cuts_a_link_both_ways_until_healed() {
    let tls = ClusterTls::generate().unwrap();
    let (one, one_received) = node(&tls);
    let (two, two_received) = node(&tls);
    one.set_peer(2, two.local_addr());
    two.set_peer(1, one.local_addr());
    assert!(block_on(one.deliver(2, frame(1))).is_ok());
    assert!(block_on(two.deliver(1, frame(2))).is_ok());

    // Cut on node 1 only: it sends nothing to 2 and takes nothing from it.
    one.faults().cut(2);
    assert_eq!(
        block_on(one.deliver(2, frame(3))),
        Err(TransportError::Cut(2))
    );
    let from_two = block_on(two.deliver(1, frame(4)));
    assert!(
        matches!(from_two, Err(TransportError::Stream { .. })),
        "{from_two:?}"
    );
    one.faults().heal(2);
    assert!(block_on(one.deliver(2, frame(5))).is_ok());
    assert!(block_on(two.deliver(1, frame(6))).is_ok());

    let at_two: Vec<Bytes> = two_received.try_iter().map(|i| i.frame).collect();
    let at_one: Vec<Bytes> = one_received.try_iter().map(|i| i.frame).collect();
    assert_eq!(at_two, vec![frame(1), frame(5)]);
    assert_eq!(at_one, vec![frame(2), frame(6)]);
}
