//! The whole frames of conformance/frames.json (docs/PROTOCOL.md §1-§8, §12):
//! every message kind, every status, requests with and without a deadline,
//! metadata and stream flags, each as its fields and its exact bytes. This
//! test makes each frame with the encoders the toolkit sends with, checks
//! the file holds exactly those bytes, and reads each back with the decoder
//! the toolkit receives with. The Python client's tests build and read the
//! same frames. Re-bless with
//! `CONFORMANCE_BLESS=1 cargo test -p rpc-core --lib conformance`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde_json::{Value, json};

use crate::envelope::{self, FLAG_STREAM_IN, FLAG_STREAM_OUT, Message, Status};
use crate::metadata;

const FRAME_LIMIT: usize = 16 * 1024 * 1024;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn body<T: Serialize>(value: &T) -> String {
    hex(&bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap())
}

fn case(name: &str, direction: &str, message: Value, frame: &BytesMut) -> Value {
    json!({ "name": name, "direction": direction, "message": message, "hex": hex(frame) })
}

const TO_SERVER: &str = "client to server";
const TO_CLIENT: &str = "server to client";

/// A request frame made as a client makes one.
#[allow(clippy::too_many_arguments)]
fn request<A: Serialize>(
    name: &str,
    id: u64,
    service: &str,
    method: &str,
    deadline_us: Option<u64>,
    pairs: &[(&str, &str)],
    streams: u8,
    args: &A,
) -> Value {
    let mut entries = Vec::new();
    for (key, value) in pairs {
        metadata::put_entry(&mut entries, key, value.as_bytes());
    }
    let mut frame = BytesMut::new();
    envelope::encode_request(
        &mut frame,
        service,
        method,
        deadline_us.map(Duration::from_micros),
        &entries,
        &[],
        streams,
        args,
        FRAME_LIMIT,
    )
    .unwrap();
    envelope::set_request_id(&mut frame, id);
    let message = json!({
        "kind": "request", "id": id, "service": service, "method": method,
        "deadline_us": deadline_us, "metadata": pairs, "streams": streams, "body": body(args),
    });
    case(name, TO_SERVER, message, &frame)
}

/// The schema of `Calculator.add(a: i64, b: i64) -> i64` (§12).
const ADD_SCHEMA: &str = r#"{"args":["I64","I64"],"returns":"I64","types":{}}"#;

/// A request that claims the schema `text` (§12).
fn claimed_request<A: Serialize>(name: &str, id: u64, method: &str, text: &str, args: &A) -> Value {
    let schema = crate::schema::MethodSchema::parse(text).unwrap();
    let mut frame = BytesMut::new();
    envelope::encode_request(
        &mut frame,
        "Calculator",
        method,
        None,
        &[],
        schema.claim(),
        0,
        args,
        FRAME_LIMIT,
    )
    .unwrap();
    envelope::set_request_id(&mut frame, id);
    let message = json!({
        "kind": "request", "id": id, "service": "Calculator", "method": method,
        "deadline_us": null, "metadata": [], "streams": 0, "body": body(args),
        "schema": { "fingerprint": schema.hex(), "text": text },
    });
    case(name, TO_SERVER, message, &frame)
}

/// An OK response that claims the server's schema: its fingerprint, and
/// `text` if not empty (§12).
fn claimed_response<R: Serialize>(
    name: &str,
    id: u64,
    value: &R,
    fingerprint: u64,
    text: &str,
) -> Value {
    let mut entry = Vec::new();
    entry.extend_from_slice(&0x0003u16.to_le_bytes());
    entry.extend_from_slice(&(8 + text.len() as u32).to_le_bytes());
    entry.extend_from_slice(&fingerprint.to_le_bytes());
    entry.extend_from_slice(text.as_bytes());
    let mut frame = BytesMut::new();
    envelope::encode_response(&mut frame, id, value, &entry, FRAME_LIMIT).unwrap();
    let message = json!({
        "kind": "response", "id": id, "status": 0, "body": body(value),
        "schema": { "fingerprint": format!("{fingerprint:016x}"), "text": text },
    });
    case(name, TO_CLIENT, message, &frame)
}

fn response<R: Serialize>(name: &str, id: u64, value: &R) -> Value {
    let mut frame = BytesMut::new();
    envelope::encode_response(&mut frame, id, value, &[], FRAME_LIMIT).unwrap();
    let message = json!({ "kind": "response", "id": id, "status": 0, "body": body(value) });
    case(name, TO_CLIENT, message, &frame)
}

fn error(id: u64, status: u8, message: &str) -> Value {
    let mut frame = BytesMut::new();
    envelope::encode_error(&mut frame, id, Status(status), message);
    let fields = json!({
        "kind": "response", "id": id, "status": status, "body": hex(message.as_bytes()),
    });
    case(
        &format!("error response, status {status}"),
        TO_CLIENT,
        fields,
        &frame,
    )
}

fn header_only(
    name: &str,
    direction: &str,
    kind: &str,
    id: u64,
    encode: fn(&mut BytesMut, u64),
) -> Value {
    let mut frame = BytesMut::new();
    encode(&mut frame, id);
    case(name, direction, json!({ "kind": kind, "id": id }), &frame)
}

fn items<T: Serialize>(name: &str, direction: &str, id: u64, values: &[T]) -> Value {
    let mut frame = BytesMut::new();
    let start = envelope::begin_items(&mut frame, id);
    let mut encoded = Vec::new();
    for value in values {
        let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap();
        frame.extend_from_slice(&bytes);
        encoded.extend_from_slice(&bytes);
    }
    envelope::finish_items(&mut frame, start, values.len() as u32);
    let message =
        json!({ "kind": "items", "id": id, "count": values.len(), "items": hex(&encoded) });
    case(name, direction, message, &frame)
}

#[derive(Serialize)]
enum MathError {
    DivByZero,
}

fn frames() -> Vec<Value> {
    let mut c = vec![
        request(
            "Calculator.add(2, 3), id 7 (§7)",
            7,
            "Calculator",
            "add",
            None,
            &[],
            0,
            &(2i64, 3i64),
        ),
        request(
            "a request with a deadline of 1.5 s",
            8,
            "Calculator",
            "add",
            Some(1_500_000),
            &[],
            0,
            &(-1i64, 1i64),
        ),
        request(
            "a request with a deadline and two metadata entries",
            9,
            "Calculator",
            "total",
            Some(250_000),
            &[("authorization", "Bearer s3cret"), ("x-request-id", "42")],
            0,
            &(),
        ),
        request(
            "metadata alone, a key repeated",
            10,
            "SeedObjects",
            "get_obj",
            None,
            &[("k", "1"), ("k", "")],
            0,
            &(),
        ),
        request(
            "no arguments, the largest id",
            u64::MAX,
            "SeedObjects",
            "get_obj",
            None,
            &[],
            0,
            &(),
        ),
        request(
            "a string argument",
            11,
            "SeedObjects",
            "send_obj",
            None,
            &[],
            0,
            &("lxx nb",),
        ),
        request(
            "a call that sends a stream (flag bit 1)",
            12,
            "Market",
            "upload",
            None,
            &[],
            FLAG_STREAM_IN,
            &("f",),
        ),
        request(
            "a call that reads a stream (flag bit 2, §8)",
            1,
            "Counter",
            "count",
            None,
            &[],
            FLAG_STREAM_OUT,
            &(2u32,),
        ),
        request(
            "a call with both streams",
            13,
            "Market",
            "echo",
            None,
            &[],
            FLAG_STREAM_IN | FLAG_STREAM_OUT,
            &(),
        ),
        claimed_request(
            "Calculator.add(2, 3) claiming its schema (§12)",
            30,
            "add",
            ADD_SCHEMA,
            &(2i64, 3i64),
        ),
        claimed_request(
            "a claim whose schema differs: add of two u64",
            31,
            "add",
            r#"{"args":["U64","U64"],"returns":"U64","types":{}}"#,
            &(2u64, 3u64),
        ),
        response("the answer 5 (§7)", 7, &5i64),
        claimed_response(
            "the answer 5 and the server's fingerprint: the schemas agree",
            30,
            &5i64,
            crate::schema::MethodSchema::parse(ADD_SCHEMA)
                .unwrap()
                .fingerprint(),
            "",
        ),
        claimed_response(
            "an answer with the server's fingerprint and text: they differ",
            32,
            &5i64,
            crate::schema::MethodSchema::parse(ADD_SCHEMA)
                .unwrap()
                .fingerprint(),
            ADD_SCHEMA,
        ),
        claimed_response(
            "an answer for a method with no schema: fingerprint 0",
            33,
            &(),
            0,
            "",
        ),
        response("a unit answer: an empty body", 10, &()),
        response("a string answer", 11, &"lxx nb"),
        response("a Result's Ok", 14, &Ok::<i64, MathError>(42)),
        response(
            "a Result's Err: the method's own error, status 0",
            15,
            &Err::<i64, MathError>(MathError::DivByZero),
        ),
        response(
            "the end of a server stream: status 0, empty body (§8)",
            1,
            &(),
        ),
        response(
            "the end of a Result<Streaming<T>, E> stream: Ok(())",
            16,
            &Ok::<(), MathError>(()),
        ),
    ];
    for (status, message) in [
        (1, "unknown service `Nope`"),
        (2, "unknown method `Calculator.nope`"),
        (
            3,
            "could not decode the arguments: the value ends early: 1 more byte(s) needed",
        ),
        (4, "the handler panicked: boom"),
        (5, "could not encode the reply"),
        (6, "the connection already has 100 calls running"),
        (7, "the deadline passed"),
        (8, "missing or invalid credentials"),
        (9, "not allowed: ünïcode in a message"),
        (10, "cancelled by the client"),
        (
            11,
            "the arguments do not fit the server's types: \
             the value is sent as a u64, read as an i64",
        ),
    ] {
        c.push(error(20 + u64::from(status), status, message));
    }
    c.extend([
        header_only("cancel", TO_SERVER, "cancel", 7, envelope::encode_cancel),
        header_only("ping from the client", TO_SERVER, "ping", 1, |b, t| {
            envelope::encode_ping(b, t, false)
        }),
        header_only("pong from the server", TO_CLIENT, "pong", 1, |b, t| {
            envelope::encode_ping(b, t, true)
        }),
        header_only("ping from the server", TO_CLIENT, "ping", 2, |b, t| {
            envelope::encode_ping(b, t, false)
        }),
        header_only("pong from the client", TO_SERVER, "pong", 2, |b, t| {
            envelope::encode_ping(b, t, true)
        }),
        header_only(
            "drain: requests from id 12 on were not read",
            TO_CLIENT,
            "drain",
            12,
            envelope::encode_drain,
        ),
        items(
            "items 0 and 1 of a Streaming<u32> (§8)",
            TO_CLIENT,
            1,
            &[0u32, 1u32],
        ),
        items(
            "an items message with no items: the stream is open",
            TO_CLIENT,
            1,
            &[] as &[u32],
        ),
        items(
            "items of a client stream",
            TO_SERVER,
            12,
            &["hello", "wörld"],
        ),
        header_only(
            "end of the client's stream",
            TO_SERVER,
            "end",
            12,
            envelope::encode_end,
        ),
        header_only(
            "stop: the server reads no more",
            TO_CLIENT,
            "stop",
            12,
            envelope::encode_stop,
        ),
    ]);
    for (name, direction, id, bytes) in [
        (
            "credit: the client's first grant (§8)",
            TO_SERVER,
            1,
            196_608u32,
        ),
        ("credit from the server", TO_CLIENT, 12, 131_072),
    ] {
        let mut frame = BytesMut::new();
        envelope::encode_credit(&mut frame, id, bytes);
        c.push(case(
            name,
            direction,
            json!({ "kind": "credit", "id": id, "bytes": bytes }),
            &frame,
        ));
    }
    c
}

fn handshakes() -> Vec<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    [
        ("a client's handshake", 0u16),
        ("a server's, call limit 100", 100),
        ("a server's, no call limit", 0),
    ]
    .into_iter()
    .map(|(name, call_limit)| {
        let mut hello = Vec::new();
        runtime
            .block_on(crate::frame::write_hello(&mut hello, call_limit))
            .unwrap();
        json!({ "name": name, "call_limit": call_limit, "hex": hex(&hello) })
    })
    .collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// What the decoder reads from a frame, in the file's terms.
fn read(frame: &[u8]) -> Value {
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4, "the length prefix counts the payload");
    let payload = Bytes::copy_from_slice(&frame[4..]);
    match envelope::decode(&payload).expect("a frame the toolkit reads") {
        Message::Request {
            id,
            service,
            method,
            deadline,
            metadata,
            streams,
            body,
            schema,
        } => with_claim(
            json!({
                "kind": "request", "id": id, "service": service, "method": method,
                "deadline_us": deadline.map(|d| d.as_micros() as u64),
                "metadata": metadata.iter().map(|(k, v)| json!([k, String::from_utf8_lossy(v)])).collect::<Vec<_>>(),
                "streams": streams, "body": hex(&body),
            }),
            schema,
        ),
        Message::Response {
            id,
            status,
            body,
            schema,
        } => with_claim(
            json!({ "kind": "response", "id": id, "status": status.0, "body": hex(&body) }),
            schema,
        ),
        Message::Drain { first_unread } => json!({ "kind": "drain", "id": first_unread }),
        Message::Cancel { id } => json!({ "kind": "cancel", "id": id }),
        Message::Ping { token } => json!({ "kind": "ping", "id": token }),
        Message::Pong { token } => json!({ "kind": "pong", "id": token }),
        Message::Items {
            id,
            count,
            items,
            cost,
        } => {
            assert_eq!(cost, len, "an items message costs its payload length");
            json!({ "kind": "items", "id": id, "count": count, "items": hex(&items) })
        }
        Message::End { id } => json!({ "kind": "end", "id": id }),
        Message::Credit { id, bytes } => json!({ "kind": "credit", "id": id, "bytes": bytes }),
        Message::Stop { id } => json!({ "kind": "stop", "id": id }),
    }
}

/// `message` with the claim it carried, if any, in the file's terms.
fn with_claim(mut message: Value, claim: Option<crate::schema::Claim<'_>>) -> Value {
    if let Some(claim) = claim {
        message["schema"] = json!({
            "fingerprint": format!("{:016x}", claim.fingerprint),
            "text": String::from_utf8_lossy(claim.text),
        });
    }
    message
}

#[test]
fn the_frames_are_what_the_toolkit_sends_and_reads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/frames.json");
    let made = json!({ "handshakes": handshakes(), "frames": frames() });
    if std::env::var_os("CONFORMANCE_BLESS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&made).unwrap() + "\n").unwrap();
    }
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the frames file"))
            .expect("the frames are JSON");
    assert_eq!(file, made, "conformance/frames.json is stale: re-bless it");
    for frame in made["frames"].as_array().unwrap() {
        let read = read(&unhex(frame["hex"].as_str().unwrap()));
        assert_eq!(read, frame["message"], "{}", frame["name"]);
    }
}
