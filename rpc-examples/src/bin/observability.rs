//! Spans and metrics of a few calls: a `tracing` subscriber prints each
//! call's span as it closes, and a Prometheus recorder (cargo feature
//! `metrics` of rpc-core, exported with `metrics-exporter-prometheus`)
//! collects the counters, gauges and latency histograms, printed at the
//! end as a scrape of `/metrics` would read them. docs/OBSERVABILITY.md
//! lists every field and metric.

use metrics_exporter_prometheus::PrometheusBuilder;
use rpc_core::{RpcError, Server};
use rpc_examples::{Calc, CalculatorClient, CalculatorServer, MathError};
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Each call span is printed when it closes, with its fields and time.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
    // A real service would serve this page to Prometheus (the exporter's
    // `http-listener` feature, or its own route); here it is printed.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    let server = Server::builder()
        .add_service(CalculatorServer::new(Calc::default()))
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    tokio::spawn(server.serve());

    let client = CalculatorClient::connect(addr).await?;
    for i in 0..5 {
        client.add(i, i).await?;
    }
    assert_eq!(client.div(1, 0).await?, Err(MathError::DivByZero));
    let unknown: Result<(), RpcError> = rpc_core::RpcClient::channel(&client)
        .call("Calculator", "no_such_method", ())
        .await;
    println!(
        "a call to a method that does not exist: {}",
        unknown.unwrap_err()
    );
    println!("\n--- /metrics ---\n{}", prometheus.render());
    Ok(())
}
