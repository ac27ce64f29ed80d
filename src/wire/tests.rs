use proptest::prelude::*;

use super::*;

fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, v);
    out
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = varint(body.len() as u64);
    out.extend_from_slice(body);
    out
}

#[test]
fn varints_match_protobuf() {
    assert_eq!(varint(0), [0x00]);
    assert_eq!(varint(127), [0x7f]);
    assert_eq!(varint(300), [0xac, 0x02]);
    assert_eq!(varint(1 << 40), [0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
    assert_eq!(varint(u64::MAX).len(), MAX_VARINT_LEN);
    assert_eq!(
        get_varint(&varint(u64::MAX)),
        Ok(Some((u64::MAX, MAX_VARINT_LEN)))
    );
}

#[test]
fn bad_varints_are_refused_and_short_ones_wait() {
    assert_eq!(get_varint(&[0xff; 10]), Err(WireError::Varint));
    // Ten bytes whose last carries more than u64's top bit.
    let mut over = vec![0xff; 9];
    over.push(0x02);
    assert_eq!(get_varint(&over), Err(WireError::Varint));
    assert_eq!(get_varint(&[0x80, 0x80]), Ok(None));
    assert_eq!(get_varint(&[]), Ok(None));
}

#[test]
fn take_delimited_waits_for_the_body_and_checks_the_length_first() {
    let mut buf = BytesMut::from(&frame(b"hello")[..3]);
    assert_eq!(take_delimited(&mut buf, 16), Ok(None));
    assert_eq!(buf.len(), 3, "an incomplete frame is left in place");
    buf.extend_from_slice(b"llo");
    buf.extend_from_slice(&frame(b"x"));
    assert_eq!(
        take_delimited(&mut buf, 16),
        Ok(Some(Bytes::from_static(b"hello")))
    );
    assert_eq!(
        take_delimited(&mut buf, 16),
        Ok(Some(Bytes::from_static(b"x")))
    );
    assert!(buf.is_empty());

    // Refused from the prefix alone, before any body arrives.
    let mut huge = BytesMut::from(&varint(1 << 40)[..]);
    assert_eq!(
        take_delimited(&mut huge, 1024),
        Err(WireError::Oversized {
            size: 1 << 40,
            max: 1024
        })
    );
}

#[tokio::test]
async fn read_delimited_reads_one_frame_and_nothing_after_it() {
    let mut wire = frame(b"first");
    wire.extend_from_slice(b"rest");
    let mut r = &wire[..];
    assert_eq!(
        read_delimited(&mut r, 16).await.unwrap(),
        Bytes::from_static(b"first")
    );
    assert_eq!(r, b"rest");
}

#[tokio::test]
async fn read_delimited_names_each_failure() {
    let truncated = &frame(b"hello")[..4];
    assert!(matches!(
        read_delimited(&mut &truncated[..], 16).await,
        Err(ReadDelimitedError::Truncated)
    ));
    assert!(matches!(
        read_delimited(&mut &[][..], 16).await,
        Err(ReadDelimitedError::Truncated)
    ));
    assert!(matches!(
        read_delimited(&mut &varint(17)[..], 16).await,
        Err(ReadDelimitedError::Wire(WireError::Oversized {
            size: 17,
            max: 16
        }))
    ));
    assert!(matches!(
        read_delimited(&mut &[0xff; 11][..], usize::MAX).await,
        Err(ReadDelimitedError::Wire(WireError::Varint))
    ));
}

proptest! {
    #[test]
    fn every_u64_round_trips_and_agrees_with_prost(v in any::<u64>()) {
        let ours = varint(v);
        let mut theirs = Vec::new();
        prost::encoding::encode_varint(v, &mut theirs);
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(ours.len(), varint_len(v));
        prop_assert_eq!(get_varint(&ours), Ok(Some((v, ours.len()))));
        // Every strict prefix asks for more bytes instead of guessing.
        for cut in 0..ours.len() {
            prop_assert_eq!(get_varint(&ours[..cut]), Ok(None));
        }
    }

    #[test]
    fn frames_split_anywhere_come_back_whole(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        chunk in 1usize..64,
    ) {
        let wire: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(body) = take_delimited(&mut buf, 300).unwrap() {
                out.push(body.to_vec());
            }
        }
        prop_assert_eq!(out, bodies);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_exceed_the_limit(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        max in 0usize..32,
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(body)) = take_delimited(&mut buf, max) {
            prop_assert!(body.len() <= max);
        }
    }
}
