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
use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::error::RpcError;
use crate::schema::{Body, Failure, MethodSchema};
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

/// How long [`Balancer::start`] waits for the source's first batch.
const FIRST_BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long [`Balancer::start`] still waits for slow endpoints once one is
/// ready.
const WARM_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Draws made for a pick before looking at every endpoint instead.
const DRAWS: usize = 4;

/// The most endpoints a balanced channel keeps: each costs a connection
/// and a task, and a registry gone wrong must not open thousands.
pub(crate) const MAX_ENDPOINTS: usize = 1024;

/// The endpoints as of the last batch, and their weights added up in
/// order, for a draw in proportion to weight without a pass over them.
#[derive(Default)]
struct Table {
    endpoints: Vec<Arc<Endpoint>>,
    /// `cumulative[i]`: the weights of endpoints `0..=i`.
    cumulative: Vec<u64>,
}

impl Table {
    fn new(endpoints: Vec<Arc<Endpoint>>) -> Table {
        let cumulative = endpoints
            .iter()
            .scan(0u64, |sum, e| {
                *sum += u64::from(e.weight());
                Some(*sum)
            })
            .collect();
        Table {
            endpoints,
            cumulative,
        }
    }

    /// The endpoint that `random` lands on, weights counted; `None` if
    /// there is none.
    fn draw(&self, random: u64) -> Option<&Arc<Endpoint>> {
        let total = *self.cumulative.last()?;
        let at = random % total;
        let index = self.cumulative.partition_point(|&sum| sum <= at);
        self.endpoints.get(index)
    }
}

/// The endpoints, shared with the task that follows the source.
struct Set {
    table: ArcSwap<Table>,
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
        let handshake_timeout = settings.connect.handshake_timeout;
        // A source that never answers must not hang the caller.
        let first = match tokio::time::timeout(FIRST_BATCH_TIMEOUT, changes.next()).await {
            Ok(Some(first)) => first?,
            Ok(None) => Vec::new(),
            Err(_) => {
                return Err(RpcError::Discovery {
                    message: format!(
                        "the discovery source gave no endpoints within {FIRST_BATCH_TIMEOUT:?}"
                    ),
                });
            }
        };
        let set = Arc::new(Set {
            table: ArcSwap::from_pointee(Table::default()),
            settings: Arc::new(settings),
            stop: CancellationToken::new(),
            changed: Arc::new(watch::channel(0).0),
        });
        set.apply(first);
        // Until every endpoint has been tried once, so that the first calls
        // spread; but once one is ready, a mute one holds this up only for
        // a moment.
        let mut changed = set.changed.subscribe();
        let mut until = tokio::time::Instant::now() + handshake_timeout;
        loop {
            let table = set.table.load();
            if table
                .endpoints
                .iter()
                .all(|e| e.attempted.load(Ordering::Acquire))
            {
                break;
            }
            if table.endpoints.iter().any(|e| e.is_ready()) {
                until = until.min(tokio::time::Instant::now() + WARM_GRACE);
            }
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let follower = tokio::spawn(follow(set.clone(), changes)).abort_handle();
        Ok(Balancer {
            set,
            follower,
            allowance: Allowance::new(retries.window, retries.min_per_sec, retries.percent),
            closed: AtomicBool::new(false),
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
        local: Option<&MethodSchema>,
        decode: impl FnOnce(Body<'_>) -> Result<R, Failure>,
        idempotent: bool,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
    {
        let deadline = Deadline::start(options.timeout)?;
        self.allowance.earn();
        let mut decode = Some(decode);
        // The endpoints tried, by identity (no reference held); allocated
        // only when a call is retried.
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<RpcError> = None;
        loop {
            let (endpoint, connection) = match self.pick(&tried) {
                Ok(picked) => picked,
                // The endpoints left went away meanwhile: the last error
                // says more than "none left".
                Err(e) => return Err(last.unwrap_or(e)),
            };
            let answer = |body: Body<'_>| decode.take().expect("one reply is decoded")(body);
            let result = connection
                .call(
                    service, method, args, options, deadline, span, local, answer,
                )
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
    fn pick(&self, tried: &[usize]) -> Result<(usize, Arc<Connection>), RpcError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(RpcError::NotProcessed {
                reason: "the channel was closed (Channel::close)".to_owned(),
            });
        }
        let table = self.set.table.load();
        if let Some(picked) = self.choose(&table, tried) {
            return Ok(picked);
        }
        // The draws kept finding endpoints that are down or tried: the
        // same choice among those that can take the call.
        let ready = table
            .endpoints
            .iter()
            .filter(|e| e.is_ready() && !tried.contains(&identity(e)))
            .cloned()
            .collect();
        self.choose(&Table::new(ready), &[])
            .ok_or_else(|| self.none_ready(&table.endpoints))
    }

    /// Two draws from `table` (its weights fixed when it was made) of
    /// endpoints that take calls and are not among `tried`, a few tries
    /// each, and the one with fewer calls per unit of weight; `None` if
    /// no draw found one. Each endpoint drawn costs one load of its
    /// connection, which then gives its load and is the one used.
    fn choose(&self, table: &Table, tried: &[usize]) -> Option<(usize, Arc<Connection>)> {
        let draw = |avoid: Option<&Arc<Endpoint>>| {
            (0..DRAWS).find_map(|_| {
                let endpoint = table.draw(self.random())?;
                if avoid.is_some_and(|a| Arc::ptr_eq(a, endpoint))
                    || tried.contains(&identity(endpoint))
                {
                    return None;
                }
                let connection = endpoint.ready()?;
                let load = connection.load() as u64;
                Some((endpoint, connection, load))
            })
        };
        let a = draw(None)?;
        // With one endpoint there is no second to draw.
        let b = match table.endpoints.len() {
            1 => None,
            _ => draw(Some(a.0)),
        };
        // Lower load per weight wins, compared without division; on a tie
        // (an idle cluster) the first draw stands, so that calls then
        // spread in proportion to the weights.
        let (endpoint, connection, _) = match b {
            Some(b) if b.2 * u64::from(a.0.weight()) < a.2 * u64::from(b.0.weight()) => b,
            _ => a,
        };
        Some((identity(endpoint), connection))
    }

    /// Whether an endpoint other than those `tried` could take the call.
    fn has_untried(&self, tried: &[usize]) -> bool {
        self.set
            .table
            .load()
            .endpoints
            .iter()
            .any(|e| e.is_ready() && !tried.contains(&identity(e)))
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

    /// A well-mixed random number: splitmix64 over a counter of this
    /// thread's, so that a pick takes no shared atomic.
    fn random(&self) -> u64 {
        thread_local! {
            static STATE: std::cell::Cell<u64> = std::cell::Cell::new(
                std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8),
            );
        }
        let mut z = STATE.with(|state| {
            let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            state.set(next);
            next
        });
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Each endpoint as it is now.
    pub(crate) fn statuses(&self) -> Vec<crate::EndpointStatus> {
        self.set
            .table
            .load()
            .endpoints
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
            || !self.set.table.load().endpoints.iter().any(|e| e.is_ready())
    }

    /// Stops following the source and closes every connection once the
    /// calls on it are answered.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.follower.abort();
        let connections: Vec<_> = self
            .set
            .table
            .load()
            .endpoints
            .iter()
            .filter_map(|e| e.ready())
            .collect();
        self.set.stop.cancel();
        futures::future::join_all(connections.iter().map(|c| c.close())).await;
    }

    /// The addresses of the endpoints, for `Debug`.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.set
            .table
            .load()
            .endpoints
            .iter()
            .map(|e| e.address.clone())
            .collect()
    }
}

/// What names an endpoint in a call's list of those tried: its address in
/// memory, so that the list holds no reference. An endpoint dropped and
/// another made at the same place would only be skipped by that call.
fn identity(endpoint: &Arc<Endpoint>) -> usize {
    Arc::as_ptr(endpoint) as usize
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
            .table
            .load()
            .endpoints
            .iter()
            .map(|e| (e.key.clone(), e.clone()))
            .collect();
        for change in batch {
            match change {
                Change::Insert { key, endpoint } => {
                    if let Err(why) = crate::discovery::check(&key, &endpoint) {
                        // Whatever was under the key is gone: the source
                        // no longer says where it is.
                        tracing::warn!("endpoint discovery gave {why}; skipped");
                        if let Some(gone) = by_key.remove(&key) {
                            gone.stop();
                        }
                        continue;
                    }
                    if let Some(known) = by_key.get(&key) {
                        if known.address == endpoint.address {
                            known.update(endpoint);
                            continue;
                        }
                        known.stop();
                    } else if by_key.len() >= MAX_ENDPOINTS {
                        tracing::warn!(
                            "endpoint discovery gave more than {MAX_ENDPOINTS} endpoints; {} skipped",
                            endpoint.address
                        );
                        continue;
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
        self.table.store(Arc::new(Table::new(endpoints)));
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
