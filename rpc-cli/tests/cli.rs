//! The built `rpc` binary against a real server on 127.0.0.1: describe,
//! call with positional and named arguments, structs and enums both ways,
//! clear errors and exit codes that tell usage, transport and RPC errors
//! apart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Output;

use rpc_core::{BearerToken, Server};
use rpc_examples::market::{Exchange, MarketServer};
use rpc_examples::{Calc, CalculatorServer, SeedObjectsServer, Seeds};
use rpc_tests::{ShapesImpl, ShapesServer};

/// Maps keyed by what is not a string, and integers beyond 64 bits.
#[rpc_core::rpc_service]
pub trait Wide {
    /// The map the other way round.
    async fn invert(&self, counts: BTreeMap<u32, String>) -> BTreeMap<String, u32>;
    /// The map's values' lengths, by the same keys.
    async fn lengths(&self, m: BTreeMap<i64, Vec<u8>>) -> BTreeMap<i64, usize>;
    /// How many pairs, keyed by pairs.
    async fn pairs(&self, m: BTreeMap<(u8, u8), String>) -> usize;
    /// Both numbers back, plus one.
    async fn widest(&self, a: u128, b: i128) -> (u128, i128);
}

struct WideImpl;

impl Wide for WideImpl {
    async fn invert(&self, counts: BTreeMap<u32, String>) -> BTreeMap<String, u32> {
        counts.into_iter().map(|(k, v)| (v, k)).collect()
    }
    async fn lengths(&self, m: BTreeMap<i64, Vec<u8>>) -> BTreeMap<i64, usize> {
        m.into_iter().map(|(k, v)| (k, v.len())).collect()
    }
    async fn pairs(&self, m: BTreeMap<(u8, u8), String>) -> usize {
        m.len()
    }
    async fn widest(&self, a: u128, b: i128) -> (u128, i128) {
        (a.wrapping_add(1), b.wrapping_add(1))
    }
}

async fn server(builder: rpc_core::ServerBuilder) -> SocketAddr {
    let server = builder
        .add_service(CalculatorServer::new(Calc::default()))
        .add_service(SeedObjectsServer::new(Seeds::default()))
        .add_service(ShapesServer::new(ShapesImpl))
        .add_service(MarketServer::new(Exchange))
        .add_service(WideServer::new(WideImpl))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    addr
}

/// Runs `rpc` with `args` (off this thread, which serves the server).
async fn rpc(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rpc"))
            .args(&args)
            .output()
            .expect("the rpc binary runs")
    })
    .await
    .unwrap()
}

/// Runs `rpc` with `args` and `input` on its standard input.
async fn rpc_with_input(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let input = input.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rpc"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the rpc binary runs");
        // A call that gives up early closes its end: that is no failure here.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn describe_lists_the_methods_and_types() {
    let addr = server(Server::builder()).await.to_string();
    let out = rpc(&["describe", &addr]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("add(a: i64, b: i64) -> i64"), "{text}");
    assert!(text.contains("Adds two numbers."), "{text}");
    assert!(
        text.contains("div(a: i64, b: i64) -> Result<i64, MathError>"),
        "{text}"
    );
    assert!(text.contains("MathError = enum { DivByZero }"), "{text}");
    assert!(
        text.contains("Shape = enum { Point, Circle(f64), Rect { w: u32, h: u32 } }"),
        "{text}"
    );
    let json = rpc(&["describe", &addr, "--describe-json"]).await;
    let first: serde_json::Value =
        serde_json::from_str(stdout(&json).lines().next().unwrap()).unwrap();
    assert_eq!(first["service"], "Calculator");
}

#[tokio::test]
async fn calls_take_positional_or_named_arguments_and_print_json() {
    let addr = server(Server::builder()).await.to_string();
    for (args, expected) in [
        (vec!["Calculator.add", "2", "3"], "5"),
        (
            vec!["Calculator.div", r#"{"a": 84, "b": 2}"#],
            r#"{"Ok":42}"#,
        ),
        (vec!["Calculator.div", "1", "0"], r#"{"Err":"DivByZero"}"#),
        (vec!["SeedObjects.get_obj"], r#""lxx nb""#),
        (vec!["SeedObjects.send_obj", "lxx nb"], "null"),
        (vec!["Shapes.option", "null"], "null"),
        (vec!["Shapes.echo", "[1, 2, 255]"], "[1,2,255]"),
        (vec!["Shapes.swap", r#"["x", 7]"#], r#"[7,"x"]"#),
    ] {
        let mut line = vec!["call", &addr];
        line.extend(&args);
        let out = rpc(&line).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), expected, "{args:?}");
    }
    // A struct with nested options and an enum of every variant kind, there
    // and back.
    for shape in [
        r#""Point""#,
        r#"{"Circle": 1.5}"#,
        r#"{"Rect": {"w": 1, "h": 2}}"#,
    ] {
        let record = format!(r#"{{"id": 7, "name": "ünï", "tags": ["a"], "shape": {shape}}}"#);
        let out = rpc(&["call", &addr, "Shapes.record", &record]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let back: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let sent: serde_json::Value = serde_json::from_str(&record).unwrap();
        assert_eq!(back, sent);
    }
}

#[tokio::test]
async fn streams_are_json_lines_out_and_in() {
    let addr = server(Server::builder()).await.to_string();
    let out = rpc(&["call", &addr, "Market.ticks", "ACME", "3"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ticks: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ticks.len(), 3);
    assert_eq!(
        ticks[2],
        serde_json::json!({ "symbol": "ACME", "seq": 2, "price": 100.5 })
    );
    // Far past the first window of credit: the stream keeps coming.
    let out = rpc(&["call", &addr, "Market.ticks", "ACME", "20000"]).await;
    assert_eq!(stdout(&out).lines().count(), 20000, "{}", stderr(&out));

    let out = rpc(&["call", &addr, "Market.history", "NOPE"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), r#"{"Err":{"UnknownSymbol":"NOPE"}}"#);

    // Bytes as arrays or base64, blank lines skipped.
    let out = rpc_with_input(&["call", &addr, "Market.upload", "f"], "[1,2,3]\n\nYWJj\n").await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "6");
    let lines: String = (0..3000).map(|i| format!("line {i}\n")).collect();
    let out = rpc_with_input(&["call", &addr, "Market.echo"], &lines).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let echoed: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(echoed.len(), 3000);
    assert_eq!(echoed[2999], r#""LINE 2999""#);

    let out = rpc_with_input(&["call", &addr, "Market.echo"], "fine\n5\n").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`input`, line 2: expected string, found number 5"),
        "{}",
        stderr(&out)
    );
    let out = rpc(&[
        "call",
        &addr,
        "Market.ticks",
        "ACME",
        "4000000000",
        "--timeout",
        "100ms",
    ])
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("deadline"), "{}", stderr(&out));
    let out = rpc(&["describe", &addr]).await;
    assert!(
        stdout(&out).contains("upload(name: String, chunks: Streaming<Vec<u8>>) -> u64"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn maps_keyed_by_numbers_and_integers_beyond_64_bits_go_both_ways() {
    let addr = server(Server::builder()).await.to_string();
    for (args, expected) in [
        (
            vec!["Wide.invert", r#"{"1": "one", "20": "twenty"}"#],
            r#"{"one":1,"twenty":20}"#,
        ),
        (vec!["Wide.invert", r#"[[3, "three"]]"#], r#"{"three":3}"#),
        (
            vec!["Wide.lengths", r#"{"-5": [1, 2], "7": [9, 9, 9]}"#],
            r#"{"-5":2,"7":3}"#,
        ),
        (vec!["Wide.pairs", r#"[[[1, 2], "a"], [[3, 4], "b"]]"#], "2"),
        (
            vec![
                "Wide.widest",
                "340282366920938463463374607431768211454",
                "-170141183460469231731687303715884105728",
            ],
            r#"["340282366920938463463374607431768211455","-170141183460469231731687303715884105727"]"#,
        ),
        (vec!["Wide.widest", "1", "-2"], "[2,-1]"),
    ] {
        let mut line = vec!["call", &addr];
        line.extend(&args);
        let out = rpc(&line).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), expected, "{args:?}");
    }
    for (args, message) in [
        (
            vec!["Wide.invert", r#"{"x": "one"}"#],
            "argument `counts`: at `x`: expected u32, found string \"x\"",
        ),
        (
            vec!["Wide.widest", "1.5", "0"],
            "argument `a`: expected u128 (a number, or a string of digits beyond 64 bits)",
        ),
        (
            vec![
                "Wide.widest",
                "340282366920938463463374607431768211456",
                "0",
            ],
            "argument `a`: expected u128",
        ),
    ] {
        let mut line = vec!["call", &addr];
        line.extend(&args);
        let out = rpc(&line).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn output_that_cannot_be_written_is_exit_1_not_a_panic() {
    let addr = server(Server::builder()).await.to_string();
    for args in [
        vec!["call", &addr, "Calculator.add", "1", "2"],
        vec!["call", &addr, "Market.ticks", "ACME", "3"],
        vec!["describe", &addr],
    ] {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_rpc"))
                .args(&args)
                .stdout(std::fs::File::create("/dev/full").unwrap())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("could not write the output"),
            "{}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_usage_error() {
    let addr = server(Server::builder()).await.to_string();
    for (args, message) in [
        (
            vec!["Calculator.add", "2", "x"],
            "argument `b`: expected i64, found string \"x\"",
        ),
        (
            vec!["Calculator.add", "2"],
            "add takes 2 arguments (a, b), 1 given",
        ),
        (vec!["Calculator.nope"], "Calculator has no method `nope`"),
        (
            vec!["Shapes.six", "300", "1", "1", "1", "true", "c"],
            "argument `a`: expected u8, found number 300",
        ),
        (
            vec![
                "Shapes.record",
                r#"{"id": 1, "name": "n", "tags": null, "shape": "Square"}"#,
            ],
            "argument `record`: field `shape`: Shape has no variant `Square` (it has Point, Circle, Rect)",
        ),
    ] {
        let mut line = vec!["call", &addr];
        line.extend(&args);
        let out = rpc(&line).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    let out = rpc(&[
        "call",
        &addr,
        "Calculator.add",
        "1",
        "2",
        "--timeout",
        "soon",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let out = rpc(&["frobnicate"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("usage:"));
}

#[tokio::test]
async fn transport_and_rpc_errors_have_exit_codes_of_their_own() {
    // Nothing listens on port 1.
    let out = rpc(&["call", "127.0.0.1:1", "Calculator.add", "1", "2"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("could not connect"));

    let addr = server(Server::builder().interceptor(BearerToken::new("s3cret")))
        .await
        .to_string();
    let out = rpc(&["call", &addr, "Calculator.add", "1", "2"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("UNAUTHENTICATED"), "{}", stderr(&out));
    let out = rpc(&[
        "call",
        &addr,
        "Calculator.add",
        "1",
        "2",
        "-H",
        "authorization=Bearer s3cret",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "3");
}

#[tokio::test]
async fn calls_go_over_tls_with_the_ca_given() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rpc_core::tls::{Identity, ServerTlsConfig};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let identity =
        Identity::from_pem(leaf.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let dir = std::env::temp_dir().join(format!("rpc-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let addr = server(Server::builder().tls(ServerTlsConfig::new(identity)))
        .await
        .to_string();
    let ca_path = ca_file.to_str().unwrap();

    let out = rpc(&[
        "call",
        &addr,
        "Calculator.add",
        "2",
        "3",
        "--ca",
        ca_path,
        "--server-name",
        "localhost",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "5");
    // Without TLS, the error says TLS is probably what is missing.
    let out = rpc(&["call", &addr, "Calculator.add", "2", "3"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An impostor introspection service that answers whatever description it
/// is given, as a broken or hostile server could.
#[rpc_core::rpc_service(name = "rpc.Reflection")]
pub trait Impostor {
    /// The services.
    async fn list(&self) -> String;
    /// The description it was made with.
    async fn describe(&self, name: String) -> String;
}

struct Lies(String);

impl Impostor for Lies {
    async fn list(&self) -> String {
        r#"{"services":["Calculator"]}"#.to_owned()
    }
    async fn describe(&self, _name: String) -> String {
        self.0.clone()
    }
}

#[tokio::test]
async fn a_server_that_describes_nonsense_is_an_error_not_a_crash() {
    let method = |args: &str, returns: &str, types: &str| {
        format!(
            r#"{{"service":"Calculator","methods":[{{"name":"total","doc":"","shape":"unary","args":[{args}],"returns":{{"type":"T","format":{returns}}}}}],"types":{types}}}"#
        )
    };
    let recursive = r#"{"T":{"NEWTYPESTRUCT":{"TYPENAME":"T"}}}"#;
    for (what, description, args) in [
        (
            "a recursive argument",
            method(
                r#"{"name":"a","type":"T","format":{"TYPENAME":"T"}}"#,
                r#""I64""#,
                recursive,
            ),
            vec!["1"],
        ),
        (
            "a recursive reply",
            method("", r#"{"TYPENAME":"T"}"#, recursive),
            vec![],
        ),
        ("no JSON at all", "{not json".to_owned(), vec![]),
    ] {
        let server = Server::builder()
            .introspection(false)
            .add_service(CalculatorServer::new(Calc::default()))
            .add_service(ImpostorServer::new(Lies(description)))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addr().to_string();
        tokio::spawn(server.serve());
        let mut line = vec!["call", &addr, "Calculator.total"];
        line.extend(&args);
        let out = rpc(&line).await;
        let code = out.status.code();
        assert!(
            matches!(code, Some(2 | 3)),
            "{what}: exit {code:?}, {}",
            stderr(&out)
        );
    }
}

/// A server of one version of `Profiles` (tests/src/evolving.rs).
async fn profiles(service: impl rpc_core::Service) -> String {
    let server = Server::builder()
        .add_service(service)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    tokio::spawn(server.serve());
    addr
}

#[tokio::test]
async fn values_that_leave_fields_out_take_the_servers_defaults() {
    use rpc_tests::evolving::{v1, v2};
    let v2 = profiles(v2::ProfilesServer::new(v2::Impl)).await;
    // `email`, which v2 added with a default, left out.
    let out = rpc(&["call", &v2, "Profiles.register", r#"{"name":"ann"}"#]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), r#""ann <none>""#);
    // In a Vec and an Option: `count` defaults to 1.
    let out = rpc(&[
        "call",
        &v2,
        "Profiles.items",
        r#"[{"label":"a"}]"#,
        r#"{"label":"b"}"#,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        r#"[{"count":1,"label":"a"},{"count":1,"label":"b"}]"#
    );
    // Given for one item and left out of the other: one call, one schema.
    let out = rpc(&[
        "call",
        &v2,
        "Profiles.items",
        r#"[{"label":"a"},{"label":"b","count":2}]"#,
        "null",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Item: field(s) count given in some values and left out of others"),
        "{}",
        stderr(&out)
    );
    // A field with no default: the server's SCHEMA_MISMATCH, naming it.
    let out = rpc(&["call", &v2, "Profiles.order", r#"{"id":1}"#]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("`Order`") && message.contains("`quantity`"),
        "{message}"
    );
    let out = rpc(&["call", &v2, "Profiles.order", r#"{"id":1,"quantity":2}"#]).await;
    assert_eq!(stdout(&out), "3", "{}", stderr(&out));
    // A v1 server ignores the field it does not know.
    let v1 = profiles(v1::ProfilesServer::new(v1::Impl)).await;
    let out = rpc(&[
        "call",
        &v1,
        "Profiles.register",
        r#"{"name":"bo","email":"b@x"}"#,
    ])
    .await;
    assert_eq!(stdout(&out), r#""bo""#, "{}", stderr(&out));
}
