//! Registration and discovery through etcd: each server puts its endpoint
//! under a prefix, on a lease it keeps alive; clients list the prefix and
//! watch it.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Change, Discover, Endpoint, diff};
use crate::error::RpcError;

/// How long a registration outlives its server by default: a server that
/// dies leaves discovery within this time.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// How long a connection to etcd may take, and a lookup or a put.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// The first and the longest wait before trying etcd again.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// etcd as a registry: [`Etcd::register`] for servers,
/// [`Etcd::discover`] for clients.
///
/// A server's key is `PREFIX/ADDRESS`, and its value the JSON object
/// `{"address": "10.0.0.1:7878", "weight": 1, "metadata": {}}`, on a lease
/// of [`DEFAULT_LEASE_TTL`] that the registration keeps alive: a server
/// that dies disappears from discovery when its lease expires, and one
/// that shuts down gracefully deletes its key first
/// ([`Registration::withdraw_after`]). Servers written in other languages
/// register the same way; a value that is a bare `host:port` is read too.
///
/// A client lists the prefix, then watches it. While etcd is down it keeps
/// the endpoints it knows, tries again (after 0.2 s, doubling up to 5 s),
/// and on its return lists the prefix afresh, so nothing that happened
/// meanwhile is missed.
///
/// ```no_run
/// # async fn run(server: rpc_core::Server) -> Result<(), rpc_core::RpcError> {
/// use rpc_core::{Channel, discovery::Etcd};
///
/// // The server's side.
/// let registration =
///     Etcd::register(&["127.0.0.1:2379"], "services/Calculator", server.local_addr()).await?;
/// let signal = async { tokio::signal::ctrl_c().await.ok(); };
/// let serving = tokio::spawn(server.serve_with_shutdown(registration.withdraw_after(signal)));
///
/// // A client's.
/// let source = Etcd::discover(&["127.0.0.1:2379"], "services/Calculator").await?;
/// let channel = Channel::balanced(source).await?;
/// # drop((channel, serving));
/// # Ok(())
/// # }
/// ```
pub struct Etcd {
    client: Client,
    prefix: String,
    known: BTreeMap<String, Endpoint>,
    revision: i64,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .field("known", &self.known.len())
            .finish()
    }
}

/// What a server writes as its key's value.
#[derive(Serialize, Deserialize)]
struct Value {
    address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

fn failed(what: &str, e: impl Display) -> RpcError {
    RpcError::Discovery {
        message: format!("etcd: {what}: {e}"),
    }
}

/// `prefix` with one `/` at its end: what every key under it starts with.
fn directory(prefix: &str) -> String {
    format!("{}/", prefix.trim_end_matches('/'))
}

async fn connect<E: AsRef<str>>(endpoints: &[E]) -> Result<Client, RpcError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(ETCD_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let endpoints: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
    Client::connect(&endpoints, Some(options))
        .await
        .map_err(|e| failed(&format!("could not connect to {}", endpoints.join(", ")), e))
}

/// The largest value read as an endpoint.
const MAX_VALUE: usize = 64 * 1024;

/// The endpoint in a key's value: the JSON object, or a bare address.
fn endpoint_of(value: &[u8]) -> Option<Endpoint> {
    if value.len() > MAX_VALUE {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.starts_with('{') {
        let value: Value = serde_json::from_str(text).ok()?;
        return Some(Endpoint {
            address: value.address,
            weight: value.weight,
            metadata: value.metadata,
        });
    }
    (!text.is_empty()).then(|| Endpoint::new(text))
}

impl Etcd {
    /// Connects to etcd at `endpoints` (`127.0.0.1:2379`, or URLs) and
    /// lists the servers registered under `prefix`; the channel made
    /// from it then follows them.
    pub async fn discover<E: AsRef<str>>(endpoints: &[E], prefix: &str) -> Result<Etcd, RpcError> {
        let mut etcd = Etcd {
            client: connect(endpoints).await?,
            prefix: directory(prefix),
            known: BTreeMap::new(),
            revision: 0,
        };
        let (listed, revision) = etcd.list().await?;
        etcd.known = listed;
        etcd.revision = revision;
        Ok(etcd)
    }

    /// Registers `address` under `prefix` at the etcd `endpoints`, with
    /// weight 1 and a lease of [`DEFAULT_LEASE_TTL`]; see
    /// [`Etcd::registration`] for other settings.
    pub async fn register<E: AsRef<str>>(
        endpoints: &[E],
        prefix: &str,
        address: impl Display,
    ) -> Result<Registration, RpcError> {
        Etcd::registration(prefix, address)
            .register(endpoints)
            .await
    }

    /// The registration of `address` under `prefix`, to adjust before
    /// [`RegistrationBuilder::register`].
    pub fn registration(prefix: &str, address: impl Display) -> RegistrationBuilder {
        RegistrationBuilder {
            prefix: directory(prefix),
            endpoint: Endpoint::new(address.to_string()),
            ttl: DEFAULT_LEASE_TTL,
        }
    }

    /// Every endpoint under the prefix, by key, and the revision listed at.
    async fn list(&mut self) -> Result<(BTreeMap<String, Endpoint>, i64), RpcError> {
        let listing = tokio::time::timeout(
            ETCD_TIMEOUT,
            self.client
                .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await
        .map_err(|_| failed("listing the prefix", "timed out"))?
        .map_err(|e| failed("listing the prefix", e))?;
        let revision = listing.header().map_or(0, |h| h.revision());
        let mut endpoints = BTreeMap::new();
        for kv in listing.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match endpoint_of(kv.value()) {
                Some(endpoint) => {
                    endpoints.insert(key, endpoint);
                }
                None => tracing::warn!("etcd: {key} holds no endpoint; skipped"),
            }
        }
        Ok((endpoints, revision))
    }

    /// Lists the prefix again and returns what changed since the last
    /// time, once etcd answers.
    async fn relist(&mut self) -> Result<Vec<Change>, RpcError> {
        let (listed, revision) = self.list().await?;
        let changes = diff(&self.known, &listed);
        self.known = listed;
        self.revision = revision;
        Ok(changes)
    }
}

impl Discover for Etcd {
    fn watch(self) -> BoxStream<'static, Result<Vec<Change>, RpcError>> {
        let first: Vec<Change> = diff(&BTreeMap::new(), &self.known);
        struct State {
            etcd: Etcd,
            watching: Option<etcd_client::WatchStream>,
            /// Set when the watch broke: list again before watching.
            broken: bool,
            retry: Duration,
        }
        let state = State {
            etcd: self,
            watching: None,
            broken: false,
            retry: RETRY_FIRST,
        };
        let rest = futures::stream::unfold(state, |mut state| async move {
            loop {
                if state.broken {
                    tokio::time::sleep(state.retry).await;
                    state.retry = (state.retry * 2).min(RETRY_MAX);
                    match state.etcd.relist().await {
                        Ok(changes) => {
                            state.broken = false;
                            if !changes.is_empty() {
                                return Some((Ok(changes), state));
                            }
                        }
                        Err(e) => return Some((Err(e), state)),
                    }
                }
                let watching = match &mut state.watching {
                    Some(watching) => watching,
                    None => {
                        let options = WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(state.etcd.revision + 1);
                        let prefix = state.etcd.prefix.clone();
                        match state.etcd.client.watch(prefix, Some(options)).await {
                            Ok(watching) => state.watching.insert(watching),
                            Err(e) => {
                                state.broken = true;
                                return Some((Err(failed("watching the prefix", e)), state));
                            }
                        }
                    }
                };
                let response = match watching.message().await {
                    Ok(Some(response)) => response,
                    ended => {
                        state.watching = None;
                        state.broken = true;
                        let why = match ended {
                            Err(e) => e.to_string(),
                            _ => "the watch ended".to_owned(),
                        };
                        return Some((Err(failed("watching the prefix", why)), state));
                    }
                };
                state.retry = RETRY_FIRST;
                if response.canceled() {
                    // Compacted past our revision, say: list afresh.
                    state.watching = None;
                    state.broken = true;
                    continue;
                }
                if let Some(header) = response.header() {
                    state.etcd.revision = state.etcd.revision.max(header.revision());
                }
                let mut changes = Vec::new();
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    match event.event_type() {
                        EventType::Put => match endpoint_of(kv.value()) {
                            Some(endpoint) => {
                                state.etcd.known.insert(key.clone(), endpoint.clone());
                                changes.push(Change::Insert { key, endpoint });
                            }
                            // What the key said before no longer holds, as
                            // a fresh listing would find.
                            None => {
                                tracing::warn!("etcd: {key} holds no endpoint; skipped");
                                if state.etcd.known.remove(&key).is_some() {
                                    changes.push(Change::Remove { key });
                                }
                            }
                        },
                        EventType::Delete => {
                            if state.etcd.known.remove(&key).is_some() {
                                changes.push(Change::Remove { key });
                            }
                        }
                    }
                }
                if !changes.is_empty() {
                    return Some((Ok(changes), state));
                }
            }
        });
        futures::stream::iter([Ok(first)]).chain(rest).boxed()
    }
}

/// A registration to make; from [`Etcd::registration`].
#[derive(Debug, Clone)]
pub struct RegistrationBuilder {
    prefix: String,
    endpoint: Endpoint,
    ttl: Duration,
}

impl RegistrationBuilder {
    /// How long the key outlives a server that stops keeping it alive
    /// (default [`DEFAULT_LEASE_TTL`], 5 s; whole seconds, at least 1 s).
    /// It is kept alive every third of that.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The share of calls the server asks for (default 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.endpoint.weight = weight;
        self
    }

    /// A pair of metadata clients see in
    /// [`EndpointStatus`](crate::EndpointStatus) (a zone, a version).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.endpoint.metadata.insert(key.into(), value.into());
        self
    }

    /// Connects to etcd at `endpoints`, puts the key on a fresh lease, and
    /// keeps the lease alive on a task of its own until the registration
    /// is withdrawn or dropped.
    ///
    /// An unspecified address (`0.0.0.0:7878`, `[::]:7878`, what a server
    /// bound to every interface reports as its own) is refused: no client
    /// could reach it. Register the host's own address instead.
    pub async fn register<E: AsRef<str>>(self, endpoints: &[E]) -> Result<Registration, RpcError> {
        let address = &self.endpoint.address;
        if address
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|addr| addr.ip().is_unspecified())
        {
            return Err(RpcError::Discovery {
                message: format!(
                    "{address} is not an address clients can reach; register the host's own address and port"
                ),
            });
        }
        let mut client = connect(endpoints).await?;
        let key = format!("{}{}", self.prefix, self.endpoint.address);
        let value = serde_json::to_string(&Value {
            address: self.endpoint.address.clone(),
            weight: self.endpoint.weight,
            metadata: self.endpoint.metadata.clone(),
        })
        .map_err(|e| failed("encoding the endpoint", e))?;
        let ttl = self.ttl.as_secs().clamp(1, i64::MAX as u64) as i64;
        let lease = Arc::new(AtomicI64::new(0));
        put_on_lease(&mut client, &key, &value, ttl, &lease).await?;
        let stop = CancellationToken::new();
        let keeper = tokio::spawn(keep_alive(
            client.clone(),
            key.clone(),
            value,
            ttl,
            lease.clone(),
            stop.clone(),
        ));
        Ok(Registration {
            client,
            key,
            lease,
            stop,
            keeper: Some(keeper),
        })
    }
}

/// Grants a lease of `ttl` seconds, records it in `current` (before the
/// put, so that a withdrawal racing this revokes the lease the key lands
/// on), and puts `key` on it.
async fn put_on_lease(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl: i64,
    current: &AtomicI64,
) -> Result<i64, RpcError> {
    let work = async {
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| failed("granting a lease", e))?
            .id();
        current.store(lease, Ordering::Release);
        client
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(|e| failed(&format!("putting {key}"), e))?;
        Ok(lease)
    };
    tokio::time::timeout(ETCD_TIMEOUT, work)
        .await
        .map_err(|_| failed(&format!("registering {key}"), "timed out"))?
}

/// Keeps the lease alive every third of its TTL; if etcd lost it (it was
/// down longer than the TTL), puts the key again on a new one.
async fn keep_alive(
    mut client: Client,
    key: String,
    value: String,
    ttl: i64,
    lease: Arc<AtomicI64>,
    stop: CancellationToken,
) {
    let period = Duration::from_secs(ttl.unsigned_abs()) / 3;
    let mut retry = RETRY_FIRST;
    let mut keeping = None;
    loop {
        let work = async {
            let id = lease.load(Ordering::Acquire);
            if keeping.is_none() {
                keeping = Some(client.lease_keep_alive(id).await?);
            }
            let (keeper, responses) = keeping.as_mut().expect("just set");
            keeper.keep_alive().await?;
            let answer = responses.message().await?;
            Ok::<_, etcd_client::Error>(answer.map(|a| a.ttl()))
        };
        let outcome = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            outcome = tokio::time::timeout(ETCD_TIMEOUT, work) => outcome,
        };
        let wait = match outcome {
            Ok(Ok(Some(left))) if left > 0 => {
                retry = RETRY_FIRST;
                period
            }
            Ok(Ok(_)) => {
                // The lease is gone: register afresh.
                keeping = None;
                tracing::warn!("etcd: the lease of {key} expired; registering again");
                let put = put_on_lease(&mut client, &key, &value, ttl, &lease);
                let put = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    put = put => put,
                };
                match put {
                    Ok(_) => {
                        retry = RETRY_FIRST;
                        period
                    }
                    Err(e) => {
                        tracing::warn!("{e}");
                        retry
                    }
                }
            }
            failure => {
                keeping = None;
                let why = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(
                    "etcd: keeping {key} alive failed: {why}; trying again in {retry:?}"
                );
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                wait
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// A server's registration in etcd, kept alive until it is withdrawn or
/// dropped. Dropping it stops the keepalive, so the key goes when its
/// lease expires; [`Registration::withdraw`] deletes it at once.
pub struct Registration {
    client: Client,
    key: String,
    /// The lease the key is on now; the keeper renews it, or replaces it
    /// when etcd lost it.
    lease: Arc<AtomicI64>,
    stop: CancellationToken,
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .finish()
    }
}

impl Registration {
    /// The key it holds.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops keeping the key alive, then deletes it and revokes its lease.
    pub async fn withdraw(mut self) -> Result<(), RpcError> {
        self.stop.cancel();
        // Once the keeper is done, no put of its can land after the delete.
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.await;
        }
        let lease = self.lease.load(Ordering::Acquire);
        let what = format!("withdrawing {}", self.key);
        let key = self.key.clone();
        let work = async {
            self.client.delete(key, None).await?;
            self.client.lease_revoke(lease).await
        };
        tokio::time::timeout(ETCD_TIMEOUT, work)
            .await
            .map_err(|_| failed(&what, "timed out"))?
            .map_err(|e| failed(&what, e))?;
        Ok(())
    }

    /// A shutdown signal for
    /// [`Server::serve_with_shutdown`](crate::Server::serve_with_shutdown):
    /// once `signal` fires, the key is deleted, and only then does the
    /// server begin to drain, so that clients stop picking it before it
    /// refuses them. A failure to delete is logged (the lease then
    /// expires on its own).
    pub async fn withdraw_after(self, signal: impl Future<Output = ()>) {
        signal.await;
        let key = self.key.clone();
        match self.withdraw().await {
            Ok(()) => tracing::info!("etcd: withdrew {key}"),
            Err(e) => tracing::warn!("{e}; it goes when its lease expires"),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_the_json_object_or_a_bare_address() {
        let json = br#"{"address":"10.0.0.1:7878","weight":3,"metadata":{"zone":"a"}}"#;
        assert_eq!(
            endpoint_of(json),
            Some(
                Endpoint::new("10.0.0.1:7878")
                    .weight(3)
                    .metadata("zone", "a")
            )
        );
        assert_eq!(
            endpoint_of(br#"{"address":"h:1"}"#),
            Some(Endpoint::new("h:1"))
        );
        assert_eq!(endpoint_of(b" h:1\n"), Some(Endpoint::new("h:1")));
        assert_eq!(endpoint_of(b"{not json"), None);
        assert_eq!(endpoint_of(b""), None);
        assert_eq!(directory("services/Calc/"), "services/Calc/");
        assert_eq!(directory("services/Calc"), "services/Calc/");
    }
}
