//! The `cluster` example runs as its docs say: calls spread over three
//! nodes, none fails when one dies or one shuts down, and the dead and
//! departed get no more.

use std::process::Command;

#[test]
fn the_cluster_example_spreads_calls_and_fails_over() {
    let output = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .output()
        .expect("run the cluster example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line `{start}` in:\n{stdout}"))
            .to_owned()
    };
    let all = line("300 calls over three nodes");
    for name in ["alpha", "beta", "gamma"] {
        assert!(all.contains(&format!("{name}: ")), "{all}");
    }
    let after_kill = line("300 calls after it died");
    assert!(!after_kill.contains("gamma"), "{after_kill}");
    let after_shutdown = line("300 calls after that");
    assert!(after_shutdown.contains("alpha: 300"), "{after_shutdown}");
    for line in [all, after_kill, after_shutdown] {
        assert!(line.ends_with("failed: 0"), "{line}");
    }
}
