use super::*;
use bytes::BytesMut;
use proptest::prelude::*;

fn round_trip(frame: &ClientFrame, payload: &[u8]) -> Frame<ClientFrame> {
    let mut bytes = BytesMut::from(&encode_frame(frame, payload.len())[..]);
    bytes.extend_from_slice(payload);
    let whole = bytes.clone();
    // Every strict prefix asks for more bytes.
    for cut in 0..whole.len() {
        let mut prefix = BytesMut::from(&whole[..cut]);
        assert_eq!(decode_frame::<ClientFrame>(&mut prefix, 1 << 20), Ok(None));
    }
    let decoded = decode_frame::<ClientFrame>(&mut bytes, 1 << 20)
        .unwrap()
        .unwrap();
    assert!(bytes.is_empty());
    decoded
}

#[test]
fn frames_round_trip_with_their_payload() {
    let produce = ClientFrame::Produce {
        request_id: 7,
        topic: "orders".into(),
        partition: 3,
        acks: Acks::All,
    };
    let decoded = round_trip(&produce, b"batch bytes");
    assert_eq!(decoded.control, produce);
    assert_eq!(&decoded.payload[..], b"batch bytes");
    let ack = ClientFrame::Ack {
        consumer_id: 1,
        partition: 0,
        offsets: vec![1, 5, 9],
    };
    assert_eq!(round_trip(&ack, b"").control, ack);
}

#[test]
fn oversized_and_inconsistent_lengths_are_refused() {
    let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    assert!(matches!(
        decode_frame::<ClientFrame>(&mut huge, 1 << 20),
        Err(FrameError::TooLarge { .. })
    ));
    let mut bad = BytesMut::new();
    bad.extend_from_slice(&8u32.to_be_bytes());
    bad.extend_from_slice(&100u32.to_be_bytes());
    bad.extend_from_slice(&[0; 4]);
    assert!(matches!(
        decode_frame::<ClientFrame>(&mut bad, 1 << 20),
        Err(FrameError::BadControlLength { .. })
    ));
}

#[test]
fn names_follow_the_file_name_rules() {
    assert!(validate_name("subscription", "billing-v2.eu_1").is_ok());
    for bad in ["", ".hidden", "a/b", "x y", &"n".repeat(250)] {
        assert!(validate_name("subscription", bad).is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buffer = BytesMut::from(&bytes[..]);
        // Decoding garbage either waits for more, fails cleanly, or yields a valid frame.
        while let Ok(Some(_)) = decode_frame::<ClientFrame>(&mut buffer, 4096) {}
        let mut buffer = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_frame::<ServerFrame>(&mut buffer, 4096) {}
    }

    #[test]
    fn corrupted_frames_never_panic(flip in 0usize..200, value in any::<u8>()) {
        let frame = ClientFrame::Subscribe {
            request_id: 1,
            consumer_id: 2,
            topic: "t".into(),
            subscription: "s".into(),
            kind: SubscriptionType::KeyShared,
            mode: Mode::Reliable,
            consumer_name: "c".into(),
            priority: 0,
            start: StartPosition::Offset(42),
            partitions: Some(vec![0, 3]),
            reattaching: false,
        };
        let mut bytes = encode_frame(&frame, 0);
        let at = flip % bytes.len();
        bytes[at] = value;
        let mut buffer = BytesMut::from(&bytes[..]);
        let _ = decode_frame::<ClientFrame>(&mut buffer, 4096);
    }
}
