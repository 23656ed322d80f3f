//! Programs the tests start: cluster nodes as processes of their own, so
//! that a test can kill one as a crash would.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};

/// A `cluster-node` process; killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// Closing it asks the node to shut down gracefully.
    stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl NodeProcess {
    /// Starts the node binary at `program` (the test's
    /// `env!("CARGO_BIN_EXE_cluster-node")`) with `args`, and waits for
    /// the line that says where it listens.
    pub fn start(program: &str, args: &[&str]) -> NodeProcess {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the node's first line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the node said {line:?}, not `listening ADDR`"));
        let stdin = child.stdin.take();
        NodeProcess { child, stdin, addr }
    }

    /// Kills it at once (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to shut down gracefully (its stdin closes) and waits for it
    /// to exit.
    pub fn shut_down(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait for the node")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
