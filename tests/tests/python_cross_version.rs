//! The Python client (python/rkit) against a v1 and a v2 server of one
//! service (`rpc_tests::evolving`): python/tests/cross_version.py, run
//! with `python3`, which the test starts itself. Skipped with a notice
//! where python3 is missing, unless RKIT_REQUIRE_PYTHON is set (as
//! .ci/run sets it), which makes that a failure.

use rpc_core::Server;
use rpc_tests::evolving::{v1, v2};
use rpc_tests::serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_follows_the_evolution_rules() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("RKIT_REQUIRE_PYTHON").is_none(),
            "python3 is missing and RKIT_REQUIRE_PYTHON is set"
        );
        eprintln!("notice: python3 not found; the Python cross-version tests are skipped");
        return;
    }
    let old = serve(Server::builder().add_service(v1::ProfilesServer::new(v1::Impl))).await;
    let new = serve(Server::builder().add_service(v2::ProfilesServer::new(v2::Impl))).await;
    let python_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../python");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-m", "unittest", "-v", "cross_version"])
            .current_dir(format!("{python_dir}/tests"))
            .env("PYTHONPATH", python_dir)
            .env("RKIT_V1_ADDR", old.to_string())
            .env("RKIT_V2_ADDR", new.to_string())
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python cross-version tests failed:\n{report}"
    );
    assert!(report.contains("Ran 6 tests"), "{report}");
}
