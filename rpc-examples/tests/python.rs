//! The Python client (python/rkit) against the example services: runs its
//! unittest suite with `python3`, which the test starts itself. Skipped
//! with a notice where python3 is missing, unless RKIT_REQUIRE_PYTHON is
//! set (as .ci/run sets it), which makes that a failure.

use rpc_core::Server;
use rpc_examples::market::{Exchange, MarketServer};
use rpc_examples::{Calc, CalculatorServer, SeedObjectsServer, Seeds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_passes_its_tests() {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    if python.is_err() {
        assert!(
            std::env::var_os("RKIT_REQUIRE_PYTHON").is_none(),
            "python3 is missing and RKIT_REQUIRE_PYTHON is set"
        );
        eprintln!("notice: python3 not found; the Python client's tests are skipped");
        return;
    }
    let server = Server::builder()
        .add_service(CalculatorServer::new(Calc::default()))
        .add_service(SeedObjectsServer::new(Seeds::default()))
        .add_service(MarketServer::new(Exchange))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    let python_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../python");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-m", "unittest", "discover", "-s", "tests", "-v"])
            .current_dir(python_dir)
            .env("PYTHONPATH", python_dir)
            .env("RKIT_ADDR", addr.to_string())
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python tests failed:\n{report}"
    );
    assert!(
        !report.contains("skipped"),
        "a Python test was skipped:\n{report}"
    );
}
