//! The conformance vectors in conformance/vectors.json: for each case a
//! serde-reflection format (with the named types it uses), a JSON value and
//! the exact bytes bincode 2's standard configuration (the toolkit's codec,
//! docs/PROTOCOL.md §6) makes of it. This test makes every case from a real
//! Rust value and checks the file holds exactly those; the Python client's
//! tests check its own codec against the same file. Re-bless with
//! `CONFORMANCE_BLESS=1 cargo test -p rpc-tests --test conformance`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serde_reflection::{Samples, Tracer, TracerConfig};

/// A struct with fields of several kinds.
#[derive(Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
    label: Option<String>,
}

/// A newtype.
#[derive(Serialize, Deserialize)]
struct Meters(u32);

/// A tuple struct.
#[derive(Serialize, Deserialize)]
struct Pair(u8, String);

/// A unit struct.
#[derive(Serialize, Deserialize)]
struct Marker;

/// An enum with every kind of variant.
#[derive(Serialize, Deserialize)]
enum Shape {
    Point,
    Circle(f64),
    Line(u8, u8),
    Rect { w: u32, h: u32 },
}

/// Bytes, as the toolkit sends a `Vec<u8>` argument.
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(b.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// One vector: traced format and types, the JSON value, the bytes.
fn case<T>(name: &str, value: T, json_value: Value) -> Value
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let mut tracer = Tracer::new(TracerConfig::default());
    let samples = Samples::new();
    let (format, _) = tracer.trace_type::<T>(&samples).expect("traced");
    let types = tracer.registry().expect("complete");
    let bytes = bincode::serde::encode_to_vec(&value, bincode::config::standard()).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    json!({ "name": name, "format": format, "types": types, "value": json_value, "hex": hex })
}

fn cases() -> Vec<Value> {
    let mut c = Vec::new();
    for n in [0u8, 1, 250, 251, 255] {
        c.push(case(&format!("u8 {n}"), n, json!(n)));
    }
    for n in [0u16, 250, 251, 65_535] {
        c.push(case(&format!("u16 {n}"), n, json!(n)));
    }
    for n in [0u32, 250, 251, 65_535, 65_536, u32::MAX] {
        c.push(case(&format!("u32 {n}"), n, json!(n)));
    }
    for n in [0u64, 251, 1 << 16, 1 << 32, u64::MAX] {
        c.push(case(&format!("u64 {n}"), n, json!(n)));
    }
    for n in [0i8, -1, 127, -128] {
        c.push(case(&format!("i8 {n}"), n, json!(n)));
    }
    for n in [0i16, -1, 1, 125, -126, i16::MAX, i16::MIN] {
        c.push(case(&format!("i16 {n}"), n, json!(n)));
    }
    for n in [0i32, -1, 2, -65_536, i32::MAX, i32::MIN] {
        c.push(case(&format!("i32 {n}"), n, json!(n)));
    }
    for n in [0i64, -1, 1, 2, i64::MAX, i64::MIN] {
        c.push(case(&format!("i64 {n}"), n, json!(n)));
    }
    c.push(case("bool true", true, json!(true)));
    c.push(case("bool false", false, json!(false)));
    c.push(case("f32 1.5", 1.5f32, json!(1.5)));
    c.push(case("f64 -0.25", -0.25f64, json!(-0.25)));
    c.push(case("f64 1e100", 1e100f64, json!(1e100)));
    for ch in ['a', 'é', '日', '😀'] {
        c.push(case(&format!("char {ch}"), ch, json!(ch.to_string())));
    }
    for s in ["", "lxx nb", "héllo 日本 😀"] {
        c.push(case(&format!("string {s:?}"), s.to_owned(), json!(s)));
    }
    c.push(case(
        "string of 300",
        "x".repeat(300),
        json!("x".repeat(300)),
    ));
    c.push(case("unit", (), Value::Null));
    c.push(case("option none", None::<u32>, Value::Null));
    c.push(case("option some", Some(7u32), json!(7)));
    // `Some(None)` has no JSON shape of its own (it is null, as `None`
    // is), so it has no vector; its bytes are `01 00`.
    c.push(case("option some some", Some(Some(3u8)), json!(3)));
    c.push(case("vec empty", Vec::<u16>::new(), json!([])));
    c.push(case(
        "vec of 3",
        vec![1u16, 300, 65_535],
        json!([1, 300, 65_535]),
    ));
    let big: Vec<u8> = (0..=255).collect();
    c.push(case("vec of 256 u8", big.clone(), json!(big)));
    c.push(case("bytes empty", Bytes(vec![]), json!([])));
    c.push(case("bytes", Bytes(vec![0, 1, 255]), json!([0, 1, 255])));
    let map: BTreeMap<String, u8> = [("a".to_owned(), 1), ("b".to_owned(), 2)].into();
    c.push(case("map", map, json!({ "a": 1, "b": 2 })));
    c.push(case("map empty", BTreeMap::<String, u8>::new(), json!({})));
    c.push(case(
        "tuple",
        (1u8, "x".to_owned(), -1i64),
        json!([1, "x", -1]),
    ));
    c.push(case("array", [1u8, 2, 3], json!([1, 2, 3])));
    c.push(case(
        "struct",
        Point {
            x: -1,
            y: 2,
            label: Some("p".to_owned()),
        },
        json!({ "x": -1, "y": 2, "label": "p" }),
    ));
    c.push(case(
        "struct with none",
        Point {
            x: 0,
            y: 0,
            label: None,
        },
        json!({ "x": 0, "y": 0, "label": null }),
    ));
    c.push(case("newtype struct", Meters(300), json!(300)));
    c.push(case(
        "tuple struct",
        Pair(1, "one".to_owned()),
        json!([1, "one"]),
    ));
    c.push(case("unit struct", Marker, Value::Null));
    c.push(case("enum unit", Shape::Point, json!("Point")));
    c.push(case(
        "enum newtype",
        Shape::Circle(0.5),
        json!({ "Circle": 0.5 }),
    ));
    c.push(case(
        "enum tuple",
        Shape::Line(1, 2),
        json!({ "Line": [1, 2] }),
    ));
    c.push(case(
        "enum struct",
        Shape::Rect { w: 3, h: 4 },
        json!({ "Rect": { "w": 3, "h": 4 } }),
    ));
    c.push(case(
        "result ok",
        Ok::<i64, String>(42),
        json!({ "Ok": 42 }),
    ));
    c.push(case(
        "result err",
        Err::<i64, String>("no".to_owned()),
        json!({ "Err": "no" }),
    ));
    c.push(case(
        "nested",
        vec![Some(vec![1u8]), None],
        json!([[1], null]),
    ));
    c
}

#[test]
fn the_vectors_are_what_the_codec_makes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/vectors.json");
    let cases = Value::Array(cases());
    if std::env::var_os("CONFORMANCE_BLESS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&cases).unwrap() + "\n").unwrap();
    }
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the vectors file"))
            .expect("the vectors are JSON");
    assert!(cases.as_array().unwrap().len() >= 60);
    assert_eq!(
        file, cases,
        "conformance/vectors.json is stale: re-bless it"
    );
}
