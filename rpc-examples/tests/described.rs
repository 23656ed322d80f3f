//! The example server's `Calculator` describes itself exactly as
//! docs/PROTOCOL.md §9 shows: the documented example is the real answer.

use rpc_core::{Channel, Server};
use rpc_examples::{Calc, CalculatorServer};

/// The first JSON block after the heading of §9.
fn documented() -> serde_json::Value {
    let protocol = include_str!("../../docs/PROTOCOL.md");
    let section = protocol
        .split("## 9. Introspection")
        .nth(1)
        .expect("PROTOCOL.md has §9");
    let block = section
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("§9 has a JSON example");
    serde_json::from_str(block).expect("the example is JSON")
}

#[tokio::test]
async fn the_calculator_describes_itself_as_the_protocol_shows() {
    let server = Server::builder()
        .add_service(CalculatorServer::new(Calc::default()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    let channel = Channel::connect(addr).await.unwrap();
    let text: String = channel
        .call("rpc.Reflection", "describe", ("Calculator",))
        .await
        .unwrap();
    let described: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(described, documented());
}
