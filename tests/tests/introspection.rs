//! Every server describes itself through `rpc.Reflection`: its services,
//! their methods with doc comments, argument names and types, and serde's
//! formats of every type, as JSON (docs/PROTOCOL.md, "Introspection").

use rpc_core::{Channel, Code, RpcError, Server, Streaming, rpc_service};
use rpc_tests::{ShapesImpl, ShapesServer, serve};
use serde_json::{Value, json};

/// Streams, to see their shapes described.
#[rpc_service]
pub trait Pipes {
    /// Reads a stream of numbers.
    async fn sum(&self, values: Streaming<u32>) -> u64;
    /// Sends `count` numbers.
    async fn count(&self, count: u32) -> Streaming<u32>;
    /// Both ways.
    async fn echo(&self, input: Streaming<String>) -> Streaming<String>;
    /// Bytes, which travel as bytes.
    async fn blob(&self, data: Vec<u8>) -> Vec<u8>;
}

/// A name that must start with `x`: its `Deserialize` checks, so the
/// tracer, which makes up values, cannot get past it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct XName(String);

impl TryFrom<String> for XName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        if name.starts_with('x') {
            Ok(XName(name))
        } else {
            Err(format!("`{name}` does not start with x"))
        }
    }
}

/// A number read from text, whose `Deserialize` panics on anything else,
/// such as the empty string the tracer makes up.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(from = "String")]
pub struct Parsed(u32);

impl From<String> for Parsed {
    fn from(text: String) -> Self {
        Parsed(text.parse().expect("a number"))
    }
}

/// A method whose type cannot be traced, beside one whose can.
#[rpc_service]
pub trait Picky {
    /// Greets an x-name.
    async fn greet(&self, name: XName) -> String;
    /// Adds.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Reads a number.
    async fn parse(&self, number: Parsed) -> u32;
}

struct Host;

impl Picky for Host {
    async fn greet(&self, name: XName) -> String {
        name.0
    }
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn parse(&self, number: Parsed) -> u32 {
        number.0
    }
}

struct Plumber;

impl Pipes for Plumber {
    async fn sum(&self, _values: Streaming<u32>) -> u64 {
        0
    }
    async fn count(&self, count: u32) -> Streaming<u32> {
        Streaming::from_iter(0..count)
    }
    async fn echo(&self, input: Streaming<String>) -> Streaming<String> {
        input
    }
    async fn blob(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

async fn reflect(
    channel: &Channel,
    method: &str,
    args: impl serde::Serialize,
) -> Result<Value, RpcError> {
    let text: String = channel.call("rpc.Reflection", method, args).await?;
    Ok(serde_json::from_str(&text).expect("the reply is JSON"))
}

fn method<'a>(description: &'a Value, name: &str) -> &'a Value {
    description["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no method {name} in {description}"))
}

#[tokio::test]
async fn a_server_lists_and_describes_its_services() {
    let addr = serve(
        Server::builder()
            .add_service(ShapesServer::new(ShapesImpl))
            .add_service(PipesServer::new(Plumber)),
    )
    .await;
    let channel = Channel::connect(addr).await.unwrap();
    assert_eq!(
        reflect(&channel, "list", ()).await.unwrap(),
        json!({ "services": ["Shapes", "Pipes"] })
    );

    let shapes = reflect(&channel, "describe", ("Shapes",)).await.unwrap();
    assert_eq!(shapes["service"], "Shapes");
    assert_eq!(
        shapes["doc"],
        "Every argument and return shape the toolkit promises to carry."
    );
    let record = method(&shapes, "record");
    assert_eq!(record["doc"], "A struct in, the same struct out.");
    assert_eq!(record["shape"], "unary");
    assert_eq!(
        record["args"],
        json!([{ "name": "record", "type": "Record", "format": { "TYPENAME": "Record" } }])
    );
    assert_eq!(record["returns"]["type"], "Record");
    let six = method(&shapes, "six");
    let formats: Vec<_> = six["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["format"].clone())
        .collect();
    assert_eq!(
        formats,
        [
            json!("U8"),
            json!("I16"),
            json!("U32"),
            json!("I64"),
            json!("BOOL"),
            json!("CHAR")
        ]
    );
    assert_eq!(
        method(&shapes, "ping")["returns"],
        json!({ "type": "()", "format": "UNIT" })
    );
    assert_eq!(
        method(&shapes, "option")["args"][0]["format"],
        json!({ "OPTION": "STR" })
    );
    assert_eq!(
        method(&shapes, "keys")["args"][0],
        json!({ "name": "map", "type": "HashMap<String, Vec<i32>>", "format": { "MAP": { "KEY": "STR", "VALUE": { "SEQ": "I32" } } } })
    );
    // Every named type, with its fields and variants in order.
    let types = &shapes["types"];
    assert_eq!(
        types["Record"],
        json!({ "STRUCT": [
            { "id": "U64" },
            { "name": "STR" },
            { "tags": { "OPTION": { "SEQ": "STR" } } },
            { "shape": { "TYPENAME": "Shape" } },
        ] })
    );
    assert_eq!(
        types["Shape"],
        json!({ "ENUM": {
            "0": { "Point": "UNIT" },
            "1": { "Circle": { "NEWTYPE": "F64" } },
            "2": { "Rect": { "STRUCT": [{ "w": "U32" }, { "h": "U32" }] } },
        } })
    );
    // An enum met only inside another (here inside `Result`) gets its
    // real variant indices too.
    assert_eq!(
        types["LookupError"],
        json!({ "ENUM": { "0": { "Missing": { "NEWTYPE": "STR" } } } })
    );
    assert_eq!(
        types["Result"],
        json!({ "ENUM": {
            "0": { "Ok": { "NEWTYPE": "U32" } },
            "1": { "Err": { "NEWTYPE": { "TYPENAME": "LookupError" } } },
        } })
    );

    let pipes = reflect(&channel, "describe", ("Pipes",)).await.unwrap();
    let shapes_of: Vec<_> = ["sum", "count", "echo", "blob"]
        .iter()
        .map(|m| method(&pipes, m)["shape"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shapes_of, ["client", "server", "bidi", "unary"]);
    assert_eq!(
        method(&pipes, "sum")["stream_arg"],
        json!({ "name": "values", "type": "u32", "format": "U32", "position": 0 })
    );
    assert_eq!(
        method(&pipes, "count")["returns"],
        json!({ "type": "Streaming<u32>", "format": "U32" })
    );
    assert_eq!(method(&pipes, "blob")["args"][0]["format"], "BYTES");
}

#[tokio::test]
async fn unknown_services_and_a_server_without_introspection_answer_with_statuses() {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let channel = Channel::connect(addr).await.unwrap();
    let unknown = reflect(&channel, "describe", ("Nope",)).await.unwrap_err();
    assert_eq!(unknown.code(), Some(Code::UnknownService));

    let closed = serve(
        Server::builder()
            .introspection(false)
            .add_service(ShapesServer::new(ShapesImpl)),
    )
    .await;
    let channel = Channel::connect(closed).await.unwrap();
    let refused = reflect(&channel, "list", ()).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::UnknownService));
}

#[tokio::test]
async fn a_type_that_cannot_be_traced_is_opaque_and_the_rest_is_described() {
    let addr = serve(Server::builder().add_service(PickyServer::new(Host))).await;
    let channel = Channel::connect(addr).await.unwrap();
    let picky = reflect(&channel, "describe", ("Picky",)).await.unwrap();
    let greet = method(&picky, "greet");
    assert!(
        greet["opaque"]
            .as_str()
            .unwrap()
            .contains("does not start with x"),
        "{greet}"
    );
    assert_eq!(greet["args"][0]["type"], "XName");
    // A `Deserialize` that panics on the tracer's values makes its method
    // opaque too, once: the description is kept.
    let parse = method(&picky, "parse");
    assert!(
        parse["opaque"].as_str().unwrap().contains("panicked"),
        "{parse}"
    );
    assert_eq!(
        reflect(&channel, "describe", ("Picky",)).await.unwrap(),
        picky
    );
    let add = method(&picky, "add");
    assert!(add.get("opaque").is_none(), "{add}");
    assert_eq!(
        add["args"][1],
        json!({ "name": "b", "type": "i64", "format": "I64" })
    );
    // The service still answers.
    let sum: i64 = channel.call("Picky", "add", (2i64, 3i64)).await.unwrap();
    assert_eq!(sum, 5);
}
