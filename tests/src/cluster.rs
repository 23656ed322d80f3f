//! A service for the cluster tests: each node answers with its name, and
//! counts what it answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{Channel, rpc_service};

/// A node of a test cluster.
#[rpc_service]
pub trait Node {
    /// The node's name; not idempotent (each one counts).
    async fn hit(&self) -> String;
    /// The node's name; may be sent twice.
    #[rpc(idempotent)]
    async fn name(&self) -> String;
}

/// A node that takes `delay` over each call.
#[derive(Clone)]
pub struct NodeImpl {
    name: String,
    delay: Duration,
    answered: Arc<AtomicUsize>,
}

impl NodeImpl {
    /// The node `name`, answering each call after `delay`.
    pub fn new(name: impl Into<String>, delay: Duration) -> NodeImpl {
        NodeImpl {
            name: name.into(),
            delay,
            answered: Arc::default(),
        }
    }

    /// How many calls it has answered.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    async fn answer(&self) -> String {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.answered.fetch_add(1, Ordering::SeqCst);
        self.name.clone()
    }
}

impl Node for NodeImpl {
    async fn hit(&self) -> String {
        self.answer().await
    }

    async fn name(&self) -> String {
        self.answer().await
    }
}

/// Waits until `channel`'s endpoints are exactly `addresses`, every one
/// connected; fails the test after 10 s.
pub async fn endpoints_are(channel: &Channel, addresses: &[String]) {
    let mut want = addresses.to_vec();
    want.sort();
    let wait = channel.endpoints_until(|endpoints| {
        let mut got: Vec<String> = endpoints.iter().map(|e| e.address.clone()).collect();
        got.sort();
        got == want && endpoints.iter().all(|e| e.connected)
    });
    crate::within_10s("the endpoints to follow their source", wait).await;
}
