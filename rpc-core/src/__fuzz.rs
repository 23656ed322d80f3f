//! Entry points for the fuzz targets in fuzz/, behind the `fuzzing`
//! feature. Not API.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::envelope::{self, Message};
use crate::frame::{FrameDecoder, Incoming};
use crate::{codec, frame};

/// A value with every kind of serde shape that allocates.
type Args = (
    String,
    Vec<u64>,
    Option<HashMap<String, Vec<u8>>>,
    (bool, char, i64),
);

/// Feeds `data` to a frame decoder in chunks whose sizes the first byte
/// chooses, checking every frame against the limit.
pub fn frame_decoder(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let max = 4096;
    let mut decoder = FrameDecoder::new(max, None);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Incoming::Frame(f))) => assert!(f.len() <= max),
                Ok(Some(Incoming::Started)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = decoder.decode_eof(&mut buf);
}

/// Decodes `data` as a frame payload, then its body as arguments.
pub fn envelope(data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    match envelope::decode(&payload) {
        Ok(Message::Request { body, metadata, .. }) => {
            // Reading the pairs back must not panic on anything decode let through.
            for (key, value) in metadata.iter() {
                let _ = (key.len(), value.len());
            }
            let _ = codec::decode::<Args>(&body);
        }
        Ok(Message::Response { body, .. }) => {
            let _ = codec::decode::<Args>(&body);
            let _ = codec::decode::<Vec<String>>(&body);
            let _ = codec::decode::<crate::__private::ByteBuf>(&body);
        }
        Ok(Message::Items {
            id,
            count,
            items,
            cost,
        }) => stream_items(id, count, items, cost),
        Ok(
            Message::Cancel { .. }
            | Message::Drain { .. }
            | Message::Ping { .. }
            | Message::Pong { .. }
            | Message::End { .. }
            | Message::Credit { .. }
            | Message::Stop { .. },
        )
        | Err(_) => {}
    }
    let _ = codec::decode::<Args>(data);
}

/// Hands an items message to a stream's receiving end, twice (the second
/// may be refused as beyond credit), and reads every item it yields.
fn stream_items(id: u64, count: u32, items: Bytes, cost: usize) {
    let inbound = crate::stream::Inbound::new(id, 0, std::sync::Arc::new(crate::stream::Detached));
    let _ = inbound.push(count, items.clone(), cost);
    let _ = inbound.push(count, items, cost);
    inbound.finish(Ok(()));
    let _ = crate::stream::read_now::<Args>(inbound);
}

/// The toolkit's handshake, for a target that talks to a real server.
pub const HELLO: [u8; frame::HELLO_LEN] = *b"RKIT\x01\x00\x00\x00";
