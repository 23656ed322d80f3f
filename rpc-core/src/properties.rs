//! Property tests across the layers that read network bytes: every message
//! round-trips, and no truncation, bit flip or chunking of valid input, nor
//! any arbitrary input, makes them panic.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use crate::codec;
use crate::envelope::{self, Message, Status};
use crate::frame::{self, FrameDecoder, Incoming};

/// A value with every kind of serde shape that allocates.
type Args = (
    String,
    Vec<u64>,
    Option<HashMap<String, u32>>,
    (bool, char, i64),
);

fn args() -> impl Strategy<Value = Args> {
    (
        ".{0,40}",
        proptest::collection::vec(any::<u64>(), 0..20),
        proptest::option::of(proptest::collection::hash_map(".{0,8}", any::<u32>(), 0..5)),
        (any::<bool>(), any::<char>(), any::<i64>()),
    )
}

fn request(id: u64, service: &str, method: &str, value: &Args) -> BytesMut {
    let mut buf = BytesMut::new();
    envelope::encode_request(
        &mut buf,
        service,
        method,
        None,
        &[],
        &[],
        0,
        value,
        usize::MAX,
    )
    .unwrap();
    envelope::set_request_id(&mut buf, id);
    buf
}

fn payload(frame: &BytesMut) -> Bytes {
    Bytes::copy_from_slice(&frame[frame::PREFIX_LEN..])
}

/// Decodes a request payload all the way to its arguments.
fn decode_request(payload: &Bytes) -> Result<(u64, String, String, Args), String> {
    match envelope::decode(payload).map_err(|e| e.to_string())? {
        Message::Request {
            id,
            service,
            method,
            body,
            ..
        } => {
            let value = codec::decode::<Args>(&body).map_err(|e| e.to_string())?;
            Ok((id, service.to_owned(), method.to_owned(), value))
        }
        other => Err(format!("not a request: {other:?}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_round_trip(id in any::<u64>(), service in "[A-Za-z]{1,30}", method in "\\PC{0,20}", value in args()) {
        let frame = request(id, &service, &method, &value);
        let back = decode_request(&payload(&frame)).unwrap();
        prop_assert_eq!(back, (id, service, method, value));
    }

    #[test]
    fn responses_round_trip(id in any::<u64>(), value in args()) {
        let mut frame = BytesMut::new();
        envelope::encode_response(&mut frame, id, &value, &[], usize::MAX).unwrap();
        match envelope::decode(&payload(&frame)).unwrap() {
            Message::Response {
                id: got,
                status,
                body,
                ..
            } => {
                prop_assert_eq!((got, status), (id, Status::OK));
                prop_assert_eq!(codec::decode::<Args>(&body).unwrap(), value);
            }
            other => prop_assert!(false, "not a response: {:?}", other),
        }
    }

    #[test]
    fn every_truncation_is_an_error(value in args(), cut in any::<prop::sample::Index>()) {
        let whole = payload(&request(3, "Svc", "method", &value));
        let cut = cut.index(whole.len());
        prop_assert!(decode_request(&whole.slice(..cut)).is_err());
    }

    #[test]
    fn bit_flips_never_panic(value in args(), bit in any::<prop::sample::Index>()) {
        let mut bytes = payload(&request(3, "Svc", "method", &value)).to_vec();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        // Any outcome but a panic is fine: a flipped bit can still be valid.
        let _ = decode_request(&Bytes::from(bytes));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let bytes = Bytes::from(bytes);
        let _ = decode_request(&bytes);
        let _ = codec::decode::<Args>(&bytes);
        let _ = codec::decode::<Vec<String>>(&bytes);
    }

    #[test]
    fn frames_survive_any_chunking(
        values in proptest::collection::vec(args(), 1..5),
        chunks in proptest::collection::vec(1usize..64, 1..50),
    ) {
        let mut stream = BytesMut::new();
        for value in &values {
            stream.extend_from_slice(&request(1, "S", "m", value));
        }
        let expected: Vec<BytesMut> = values.iter().map(|v| {
            let f = request(1, "S", "m", v);
            BytesMut::from(&f[frame::PREFIX_LEN..])
        }).collect();
        let mut decoder = FrameDecoder::new(1 << 20, None);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(item) = decoder.decode(&mut buf).unwrap() {
                if let Incoming::Frame(f) = item {
                    got.push(f);
                }
            }
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn the_frame_decoder_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut decoder = FrameDecoder::new(64, None);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(item)) = decoder.decode(&mut buf) {
            if let Incoming::Frame(f) = item {
                prop_assert!(f.len() <= 64);
            }
        }
    }
}

/// Encodes `values` as one items frame of stream 1.
fn items_frame(values: &[Args]) -> BytesMut {
    let mut buf = BytesMut::new();
    let start = envelope::begin_items(&mut buf, 1);
    for value in values {
        codec::encode(value, &mut buf, usize::MAX).unwrap();
    }
    envelope::finish_items(&mut buf, start, values.len() as u32);
    buf
}

/// Reads every item a stream's receiving end yields for `payload`.
fn read_items(payload: &Bytes) -> Option<Vec<Result<Args, String>>> {
    let Ok(Message::Items {
        count, items, cost, ..
    }) = envelope::decode(payload)
    else {
        return None;
    };
    let inbound = crate::stream::Inbound::new(1, 0, std::sync::Arc::new(crate::stream::Detached));
    inbound.push(count, items, cost).ok()?;
    inbound.finish(Ok(()));
    let read = crate::stream::read_now::<Args>(inbound);
    Some(
        read.into_iter()
            .map(|item| item.map_err(|e| e.to_string()))
            .collect(),
    )
}

proptest! {
    #[test]
    fn stream_items_round_trip(values in proptest::collection::vec(args(), 0..8)) {
        let read = read_items(&payload(&items_frame(&values))).expect("an items frame");
        let read: Vec<Args> = read.into_iter().map(|item| item.unwrap()).collect();
        prop_assert_eq!(read, values);
    }

    #[test]
    fn damaged_stream_items_never_panic_nor_yield_too_many(
        values in proptest::collection::vec(args(), 1..6),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let frame = items_frame(&values);
        let mut damaged = payload(&frame).to_vec();
        let at = flip.index(damaged.len());
        damaged[at] ^= 0x5A;
        damaged.truncate(cut.index(damaged.len() + 1).max(1));
        if let Some(read) = read_items(&Bytes::from(damaged)) {
            // At most one error, as the last item.
            let errors = read.iter().filter(|item| item.is_err()).count();
            prop_assert!(errors <= 1);
            if errors == 1 {
                prop_assert!(read.last().unwrap().is_err());
            }
        }
    }
}
