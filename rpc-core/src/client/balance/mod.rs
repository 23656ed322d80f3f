//! A balanced channel: endpoints from a [`Discover`] source, one
//! multiplexed connection to each, and every call sent to the less loaded
//! of two endpoints picked at random (power of two choices).
//!
//! The load is the calls each connection carries (the count its pending
//! table publishes), divided by the endpoint's weight: real, and read
//! without a lock. Connections are opened eagerly, by a task per
//! endpoint, so that no call waits for a connect; a call only ever goes to
//! an endpoint that is connected and not draining.

mod endpoint;
mod retry;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::CallOptions;
use super::connection::{Connection, Keepalive};
use super::deadline::Deadline;
use crate::discovery::{Change, Discover};
use crate::error::{CodecError, RpcError};
use crate::transport::ConnectSettings;
use endpoint::Endpoint;
use retry::Allowance;
pub use retry::{DEFAULT_RETRY_MIN_PER_SEC, DEFAULT_RETRY_PERCENT, DEFAULT_RETRY_WINDOW};

/// How every endpoint's connection is made and run.
pub(crate) struct Settings {
    pub(crate) connect: ConnectSettings,
    pub(crate) max_frame_length: usize,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) stream_window: usize,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

/// The retry allowance of a balanced channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetrySettings {
    pub(crate) window: Duration,
    pub(crate) min_per_sec: u32,
    pub(crate) percent: f32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            window: DEFAULT_RETRY_WINDOW,
            min_per_sec: DEFAULT_RETRY_MIN_PER_SEC,
            percent: DEFAULT_RETRY_PERCENT,
        }
    }
}

/// The endpoints, shared with the task that follows the source.
struct Set {
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    settings: Arc<Settings>,
    /// The parent of every endpoint's stop.
    stop: CancellationToken,
    /// Bumped when an endpoint comes, goes, connects or disconnects.
    changed: Arc<watch::Sender<u64>>,
}

/// What a balanced [`Channel`](crate::Channel) shares between its clones.
pub(crate) struct Balancer {
    set: Arc<Set>,
    /// The task that follows the source; aborted with the balancer.
    follower: tokio::task::AbortHandle,
    allowance: Allowance,
    closed: AtomicBool,
    /// The state of a counter-based generator for the random picks.
    seed: AtomicU64,
}

impl Balancer {
    /// Follows `discover`: waits for its first batch (an error in it is
    /// the error returned), then for each endpoint's first attempt to
    /// connect, for at most the handshake timeout.
    pub(crate) async fn start(
        discover: impl Discover,
        settings: Settings,
        retries: RetrySettings,
    ) -> Result<Balancer, RpcError> {
        let mut changes = discover.watch();
        let first = match changes.next().await {
            Some(first) => first?,
            None => Vec::new(),
        };
        let handshake_timeout = settings.connect.handshake_timeout;
        let set = Arc::new(Set {
            endpoints: ArcSwap::from_pointee(Vec::new()),
            settings: Arc::new(settings),
            stop: CancellationToken::new(),
            changed: Arc::new(watch::channel(0).0),
        });
        set.apply(first);
        let mut changed = set.changed.subscribe();
        let warm = async {
            while !set
                .endpoints
                .load()
                .iter()
                .all(|e| e.attempted.load(Ordering::Acquire))
            {
                if changed.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(handshake_timeout, warm).await;
        let follower = tokio::spawn(follow(set.clone(), changes)).abort_handle();
        let seed =
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
        Ok(Balancer {
            set,
            follower,
            allowance: Allowance::new(retries.window, retries.min_per_sec, retries.percent),
            closed: AtomicBool::new(false),
            seed: AtomicU64::new(seed),
        })
    }

    /// A unary call, sent again to another endpoint when it failed in a
    /// way [`retry::may_retry`] allows, within its deadline and the
    /// channel's allowance. Its reply is decoded once, when it comes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn call<A, R>(
        &self,
        service: &str,
        method: &str,
        args: &A,
        options: &CallOptions,
        span: Option<&tracing::Span>,
        decode: impl FnOnce(&[u8]) -> Result<R, CodecError>,
        idempotent: bool,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
    {
        let deadline = Deadline::start(options.timeout)?;
        self.allowance.earn();
        let mut decode = Some(decode);
        // Allocated only when a call is retried.
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        let mut last: Option<RpcError> = None;
        loop {
            let (endpoint, connection) = match self.pick(&tried) {
                Ok(picked) => picked,
                // The endpoints left went away meanwhile: the last error
                // says more than "none left".
                Err(e) => return Err(last.unwrap_or(e)),
            };
            let answer = |body: &[u8]| decode.take().expect("one reply is decoded")(body);
            let result = connection
                .call(service, method, args, options, deadline, span, answer)
                .await;
            let Err(error) = result else {
                return result;
            };
            let time_left = deadline.is_none_or(|d| !d.left().is_zero());
            if !(retry::may_retry(&error, idempotent) && time_left) {
                return Err(error);
            }
            tried.push(endpoint);
            if !self.has_untried(&tried) || !self.allowance.spend() {
                return Err(error);
            }
            tracing::debug!("{service}.{method} failed ({error}); trying another endpoint");
            last = Some(error);
        }
    }

    /// The connection a call goes over, and the call's deadline; stream
    /// calls take this path and are never sent twice.
    pub(crate) async fn connection(
        &self,
        options: &CallOptions,
    ) -> Result<(Arc<Connection>, Option<Deadline>), RpcError> {
        let deadline = Deadline::start(options.timeout)?;
        let (_, connection) = self.pick(&[])?;
        Ok((connection, deadline))
    }

    /// The less loaded of two ready endpoints, not among `tried`, each
    /// drawn at random in proportion to its weight.
    fn pick(&self, tried: &[Arc<Endpoint>]) -> Result<(Arc<Endpoint>, Arc<Connection>), RpcError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(RpcError::NotProcessed {
                reason: "the channel was closed (Channel::close)".to_owned(),
            });
        }
        let endpoints = self.set.endpoints.load();
        let eligible =
            |e: &&Arc<Endpoint>| e.is_ready() && !tried.iter().any(|t| Arc::ptr_eq(t, e));
        let total: u64 = endpoints
            .iter()
            .filter(eligible)
            .map(|e| u64::from(e.weight()))
            .sum();
        if total == 0 {
            return Err(self.none_ready(&endpoints));
        }
        let draw = |n: u64| {
            let mut left = n % total;
            endpoints
                .iter()
                .filter(eligible)
                .find(|e| {
                    let weight = u64::from(e.weight());
                    if left < weight {
                        return true;
                    }
                    left -= weight;
                    false
                })
                .expect("the draw is below the total weight")
        };
        let (a, b) = (draw(self.random()), draw(self.random()));
        // Lower load per weight wins, compared without division; on a tie
        // (an idle cluster) the first draw stands, so that calls then
        // spread in proportion to the weights.
        let cost = |e: &Endpoint, other: &Endpoint| e.load() as u64 * u64::from(other.weight());
        let chosen = if cost(b, a) < cost(a, b) { b } else { a };
        match chosen.ready() {
            Some(connection) => Ok((chosen.clone(), connection)),
            // It closed since it was counted; a call on it fails as not
            // run, which is retried.
            None => Err(self.none_ready(&endpoints)),
        }
    }

    /// Whether an endpoint other than those `tried` could take the call.
    fn has_untried(&self, tried: &[Arc<Endpoint>]) -> bool {
        self.set
            .endpoints
            .load()
            .iter()
            .any(|e| e.is_ready() && !tried.iter().any(|t| Arc::ptr_eq(t, e)))
    }

    /// The error of a call no endpoint can take.
    fn none_ready(&self, endpoints: &[Arc<Endpoint>]) -> RpcError {
        if endpoints.is_empty() {
            return RpcError::NotProcessed {
                reason: "no endpoint to call: the discovery source knows none".to_owned(),
            };
        }
        const SHOWN: usize = 3;
        let mut reasons: Vec<String> = endpoints
            .iter()
            .take(SHOWN)
            .map(|e| format!("{}: {}", e.address, e.why_not_ready()))
            .collect();
        if endpoints.len() > SHOWN {
            reasons.push(format!("and {} more", endpoints.len() - SHOWN));
        }
        RpcError::NotProcessed {
            reason: format!(
                "none of the {} endpoint(s) is connected ({})",
                endpoints.len(),
                reasons.join("; ")
            ),
        }
    }

    /// A well-mixed random number (splitmix64 over a shared counter).
    fn random(&self) -> u64 {
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Each endpoint as it is now.
    pub(crate) fn statuses(&self) -> Vec<crate::EndpointStatus> {
        self.set
            .endpoints
            .load()
            .iter()
            .map(|e| e.status())
            .collect()
    }

    /// Returns once an endpoint has come, gone, connected or disconnected
    /// since the last call (or since `seen`).
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.set.changed.subscribe()
    }

    /// Whether the channel was closed or no endpoint takes calls.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || !self.set.endpoints.load().iter().any(|e| e.is_ready())
    }

    /// Stops following the source and closes every connection once the
    /// calls on it are answered.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.follower.abort();
        let connections: Vec<_> = self
            .set
            .endpoints
            .load()
            .iter()
            .filter_map(|e| e.ready())
            .collect();
        self.set.stop.cancel();
        futures::future::join_all(connections.iter().map(|c| c.close())).await;
    }

    /// The addresses of the endpoints, for `Debug`.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.set
            .endpoints
            .load()
            .iter()
            .map(|e| e.address.clone())
            .collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.follower.abort();
        self.set.stop.cancel();
    }
}

/// Applies the source's batches as they come, until it ends.
async fn follow(set: Arc<Set>, mut changes: BoxStream<'static, Result<Vec<Change>, RpcError>>) {
    while let Some(batch) = changes.next().await {
        match batch {
            Ok(batch) => set.apply(batch),
            // The endpoints known stay: a registry that is down must not
            // empty the cluster.
            Err(e) => tracing::warn!("endpoint discovery failed: {e}; keeping the endpoints known"),
        }
    }
    tracing::debug!("the discovery source ended; its last endpoints stay");
}

impl Set {
    /// Applies one batch of changes and publishes the new set.
    fn apply(&self, batch: Vec<Change>) {
        if batch.is_empty() {
            return;
        }
        let mut by_key: HashMap<String, Arc<Endpoint>> = self
            .endpoints
            .load()
            .iter()
            .map(|e| (e.key.clone(), e.clone()))
            .collect();
        for change in batch {
            match change {
                Change::Insert { key, endpoint } => {
                    if let Some(known) = by_key.get(&key) {
                        if known.address == endpoint.address {
                            known.update(endpoint);
                            continue;
                        }
                        known.stop();
                    }
                    tracing::debug!(endpoint = %endpoint.address, "endpoint inserted as {key}");
                    let started = Endpoint::start(
                        key.clone(),
                        endpoint,
                        self.settings.clone(),
                        self.stop.child_token(),
                        self.changed.clone(),
                    );
                    by_key.insert(key, started);
                }
                Change::Remove { key } => {
                    if let Some(gone) = by_key.remove(&key) {
                        tracing::debug!(endpoint = %gone.address, "endpoint {key} removed");
                        gone.stop();
                    }
                }
            }
        }
        let mut endpoints: Vec<_> = by_key.into_values().collect();
        endpoints.sort_by(|a, b| a.key.cmp(&b.key));
        self.endpoints.store(Arc::new(endpoints));
        self.changed.send_modify(|version| *version += 1);
    }
}

/// One endpoint of a balanced channel as it is now; see
/// [`Channel::endpoints`](crate::Channel::endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// What the discovery source names it by.
    pub key: String,
    /// Where it is.
    pub address: String,
    /// Its weight, as the source gave it.
    pub weight: u32,
    /// What the source said of it besides.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Whether it takes calls now: connected and not draining.
    pub connected: bool,
    /// The calls its connection carries now (streams included).
    pub in_flight: usize,
    /// Why the last attempt to connect failed, until one succeeds.
    pub last_error: Option<String>,
}
