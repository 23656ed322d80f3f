//! One endpoint of a balanced channel: its connection, kept open by a task
//! of its own that reconnects with the channel's backoff.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::backoff::Backoff;
use crate::client::connection::Connection;
use crate::discovery;
use crate::error::RpcError;
use crate::transport::{self, Dial};

use super::Settings;

/// An endpoint a discovery source inserted, and the connection to it.
pub(crate) struct Endpoint {
    pub(crate) key: String,
    pub(crate) address: String,
    weight: AtomicU32,
    metadata: Mutex<BTreeMap<String, String>>,
    /// The live connection, if any: the keeper sets and clears it.
    connection: ArcSwapOption<Connection>,
    /// Why the last attempt to connect failed, while it is the last word.
    last_error: Mutex<Option<String>>,
    /// Set once the first attempt to connect has ended, either way.
    pub(crate) attempted: AtomicBool,
    /// Cancelled when the endpoint leaves the set (or the channel goes).
    stop: CancellationToken,
}

impl Endpoint {
    /// The endpoint `endpoint` under `key`, with its keeper started.
    pub(crate) fn start(
        key: String,
        endpoint: discovery::Endpoint,
        settings: Arc<Settings>,
        stop: CancellationToken,
        changed: Arc<watch::Sender<u64>>,
    ) -> Arc<Endpoint> {
        let endpoint = Arc::new(Endpoint {
            key,
            address: endpoint.address,
            weight: AtomicU32::new(endpoint.weight),
            metadata: Mutex::new(endpoint.metadata),
            connection: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            attempted: AtomicBool::new(false),
            stop,
        });
        tokio::spawn(keep(endpoint.clone(), settings, changed));
        endpoint
    }

    /// Takes the weight and metadata of `endpoint`, inserted again under
    /// the same key at the same address.
    pub(crate) fn update(&self, endpoint: discovery::Endpoint) {
        self.weight.store(endpoint.weight, Ordering::Relaxed);
        *lock(&self.metadata) = endpoint.metadata;
    }

    /// Its connection, if it takes calls now (connected, not draining).
    pub(crate) fn ready(&self) -> Option<Arc<Connection>> {
        self.connection
            .load_full()
            .filter(|connection| !connection.is_closed())
    }

    /// Whether it takes calls now; cheaper than [`Endpoint::ready`].
    pub(crate) fn is_ready(&self) -> bool {
        self.connection
            .load()
            .as_ref()
            .is_some_and(|connection| !connection.is_closed())
    }

    /// The calls its connection carries.
    pub(crate) fn load(&self) -> usize {
        self.connection.load().as_ref().map_or(0, |c| c.load())
    }

    /// Its weight, 1 to [`discovery::MAX_WEIGHT`].
    pub(crate) fn weight(&self) -> u32 {
        self.weight
            .load(Ordering::Relaxed)
            .clamp(1, discovery::MAX_WEIGHT)
    }

    /// Stops its keeper: no new calls; the connection closes once the
    /// calls on it are answered.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// What [`Channel::endpoints`](crate::Channel::endpoints) shows of it.
    pub(crate) fn status(&self) -> crate::EndpointStatus {
        crate::EndpointStatus {
            key: self.key.clone(),
            address: self.address.clone(),
            weight: self.weight.load(Ordering::Relaxed),
            metadata: lock(&self.metadata).clone(),
            connected: self.is_ready(),
            in_flight: self.load(),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// Why it takes no calls, for an error that lists the endpoints.
    pub(crate) fn why_not_ready(&self) -> String {
        let why = match (
            lock(&self.last_error).as_ref(),
            self.connection.load().as_ref(),
        ) {
            (Some(error), _) => error.clone(),
            (None, Some(connection)) => connection.close_reason(),
            (None, None) => "not connected yet".to_owned(),
        };
        discovery::shortened(&why, 200)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects `endpoint`, and again whenever its connection ends, until it
/// is stopped; failed attempts wait out the channel's backoff.
async fn keep(endpoint: Arc<Endpoint>, settings: Arc<Settings>, changed: Arc<watch::Sender<u64>>) {
    let mut backoff = Backoff::new(settings.initial_backoff, settings.max_backoff);
    let bump = || changed.send_modify(|version| *version += 1);
    loop {
        let attempt = connect(&endpoint.address, &settings);
        let connected = tokio::select! {
            biased;
            () = endpoint.stop.cancelled() => break,
            connected = attempt => connected,
        };
        endpoint.attempted.store(true, Ordering::Release);
        let delay = match connected {
            Ok(connected) => {
                let connection = Arc::new(Connection::start(
                    connected,
                    settings.max_frame_length,
                    settings.keepalive,
                    settings.stream_window,
                ));
                let since = Instant::now();
                *lock(&endpoint.last_error) = None;
                endpoint.connection.store(Some(connection.clone()));
                bump();
                tracing::debug!(endpoint = %endpoint.address, "connected");
                let stopped = tokio::select! {
                    biased;
                    () = endpoint.stop.cancelled() => true,
                    () = connection.ended() => false,
                };
                endpoint.connection.store(None);
                bump();
                if stopped {
                    // Calls on it are answered before it closes.
                    tokio::spawn(async move { connection.close().await });
                    break;
                }
                let reason = connection.close_reason();
                tracing::debug!(endpoint = %endpoint.address, "connection ended: {reason}");
                // A server that accepts and drops at once must not be
                // dialled in a tight loop: a short life counts as a failure.
                if since.elapsed() >= settings.initial_backoff {
                    backoff.succeeded();
                    continue;
                }
                backoff.failed(Instant::now(), reason)
            }
            Err(e) => {
                let reason = e.to_string();
                let reason = match std::error::Error::source(&e) {
                    Some(source) => format!("{reason}: {source}"),
                    None => reason,
                };
                *lock(&endpoint.last_error) = Some(reason.clone());
                bump();
                let delay = backoff.failed(Instant::now(), reason.clone());
                tracing::debug!(endpoint = %endpoint.address, "connecting failed: {reason}; next attempt in {delay:.1?}");
                delay
            }
        };
        tokio::select! {
            biased;
            () = endpoint.stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One attempt: resolves the address (it may be a name) and connects.
async fn connect(address: &str, settings: &Settings) -> Result<transport::Connected, RpcError> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|source| RpcError::Connect {
            addr: address.to_owned(),
            source,
        })?
        .collect();
    transport::connect(&Dial::Tcp(addrs), &settings.connect).await
}
