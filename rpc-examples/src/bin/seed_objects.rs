//! The XML-RPC benchmark of the project's origin document: 500 `get_obj`
//! calls then 500 `send_obj("lxx nb")` calls, one after another, timed.
//!
//! With `--addr HOST:PORT` it calls a running `server` binary instead of
//! starting its own.

use std::time::Instant;

use rpc_core::Server;
use rpc_examples::{SeedObjectsClient, SeedObjectsServer, Seeds};

const CALLS: usize = 500;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rpc_examples::init_logging();
    let addr = match std::env::args().len() {
        1 => {
            let server = Server::builder()
                .add_service(SeedObjectsServer::new(Seeds::default()))
                .bind("127.0.0.1:0")
                .await?;
            let addr = server.local_addr().to_string();
            tokio::spawn(server.serve());
            addr
        }
        _ => rpc_examples::addr_arg("")?,
    };
    let client = SeedObjectsClient::connect(addr.as_str()).await?;

    let start = Instant::now();
    for _ in 0..CALLS {
        let obj = client.get_obj().await?;
        assert_eq!(obj, "lxx nb");
    }
    let got = start.elapsed();
    for _ in 0..CALLS {
        client.send_obj("lxx nb".to_owned()).await?;
    }
    let total = start.elapsed();
    println!("server:              {addr}");
    println!(
        "{CALLS} get_obj calls:   {:8.2} ms",
        got.as_secs_f64() * 1e3
    );
    println!(
        "{CALLS} send_obj calls:  {:8.2} ms",
        (total - got).as_secs_f64() * 1e3
    );
    println!(
        "total ({} calls):  {:8.2} ms",
        2 * CALLS,
        total.as_secs_f64() * 1e3
    );
    Ok(())
}
