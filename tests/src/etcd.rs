//! A real etcd server for the discovery tests, on free loopback ports and
//! a data directory of its own, stopped (and the directory removed) when
//! dropped.
//!
//! Where `etcd` is not installed the tests skip with a notice, unless
//! `RPC_REQUIRE_ETCD` is set (`.ci/run` sets it and installs Debian's
//! `etcd-server`), when they fail.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The etcd binary, if one is installed (or named by `ETCD_BIN`).
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        return Some(path.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|path| path.is_file())
    })
}

/// The etcd binary, or `None` after printing why the test is skipped;
/// panics instead where `RPC_REQUIRE_ETCD` is set.
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    let found = binary();
    if found.is_none() {
        assert!(
            std::env::var_os("RPC_REQUIRE_ETCD").is_none(),
            "etcd is not installed and RPC_REQUIRE_ETCD is set ({test})"
        );
        eprintln!(
            "skipped {test}: etcd is not installed (Debian: apt-get install etcd-server; or set ETCD_BIN)"
        );
    }
    found
}

/// A running etcd.
pub struct Etcd {
    binary: PathBuf,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts `binary` on two free loopback ports and a fresh directory,
    /// and waits until it says it serves clients.
    pub fn start(binary: PathBuf) -> Etcd {
        let dir =
            std::env::temp_dir().join(format!("rpc-etcd-{}-{}", std::process::id(), free_port()));
        let mut etcd = Etcd {
            binary,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        etcd.restart();
        etcd
    }

    /// Its client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills it (SIGKILL): clients see it vanish.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data, after [`Etcd::kill`].
    pub fn restart(&mut self) {
        self.kill();
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut child = Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        let stderr = child.stderr.take().expect("piped");
        let (ready, is_ready) = mpsc::channel();
        // Reads etcd's log to its end, so that it never blocks on a full
        // pipe; says when it serves clients.
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if (line.contains("ready to serve client requests")
                    || line.contains("serving client traffic"))
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(());
                }
                if std::env::var_os("RPC_ETCD_LOG").is_some() {
                    eprintln!("etcd: {line}");
                }
            }
        });
        is_ready
            .recv_timeout(Duration::from_secs(30))
            .expect("etcd did not say it serves clients within 30 s");
        self.child = Some(child);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
