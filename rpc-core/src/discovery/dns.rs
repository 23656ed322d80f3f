//! Endpoints from DNS: a name's A/AAAA records with a fixed port, or its
//! SRV records, resolved again as their TTLs run out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::{Change, Discover, Endpoint, diff};
use crate::error::RpcError;

/// The least time between two resolutions by default, whatever the TTL.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(1);
/// The most time between two resolutions by default, whatever the TTL.
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(60);

/// How long one query waits for its answer (twice, at most).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Endpoints from DNS, resolved again when the records' TTL runs out
/// (within [`Dns::refresh`]'s bounds).
///
/// [`Dns::new`] takes `name:port` and makes an endpoint of each A and
/// AAAA record (a Kubernetes headless service's name gives one per
/// ready pod); [`Dns::srv`] takes an SRV name and makes an endpoint of each
/// target and port, weighted by the record's weight. Names are resolved
/// with the system's configuration (`/etc/resolv.conf`) unless
/// [`Dns::nameserver`] names a server.
///
/// A failed resolution keeps the endpoints known (a DNS server that is
/// down must not empty the cluster) and is tried again after the least
/// refresh time; an answer with no records removes them all. If the
/// first resolution fails, [`Channel::balanced`](crate::Channel::balanced)
/// returns its error.
///
/// ```no_run
/// # async fn run() -> Result<(), rpc_core::RpcError> {
/// use rpc_core::{Channel, discovery::Dns};
///
/// let channel = Channel::balanced(Dns::new("calc.internal:7878")).await?;
/// # drop(channel);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Dns {
    target: Target,
    nameserver: Option<SocketAddr>,
    min_refresh: Duration,
    max_refresh: Duration,
}

#[derive(Debug, Clone)]
enum Target {
    /// A name and the port every address gets; `Err` if `name:port` did
    /// not parse, reported by the first resolution.
    Host(Result<(String, u16), String>),
    /// An SRV name.
    Srv(String),
}

impl Dns {
    /// The A and AAAA records of `name_and_port` (`calc.internal:7878`),
    /// each at that port.
    pub fn new(name_and_port: &str) -> Dns {
        let parsed = name_and_port
            .rsplit_once(':')
            .and_then(|(name, port)| {
                // `[::1]:7878`: the name is the address inside the brackets.
                let name = name
                    .strip_prefix('[')
                    .and_then(|n| n.strip_suffix(']'))
                    .unwrap_or(name);
                Some((name.to_owned(), port.parse().ok()?))
            })
            .filter(|(name, _)| !name.is_empty())
            .ok_or_else(|| format!("`{name_and_port}` is not `name:port`"));
        Dns::of(Target::Host(parsed))
    }

    /// The SRV records of `name` (`_rpc._tcp.calc.internal`): each target
    /// at its port, weighted by its weight. Of records of several
    /// priorities, only the lowest-numbered are used, as RFC 2782 says; the
    /// targets are looked up together, and one that does not resolve is
    /// left out (and logged).
    pub fn srv(name: &str) -> Dns {
        Dns::of(Target::Srv(name.to_owned()))
    }

    fn of(target: Target) -> Dns {
        Dns {
            target,
            nameserver: None,
            min_refresh: DEFAULT_MIN_REFRESH,
            max_refresh: DEFAULT_MAX_REFRESH,
        }
    }

    /// Asks the DNS server at `addr` (UDP, then TCP for long answers)
    /// instead of the system's.
    pub fn nameserver(mut self, addr: SocketAddr) -> Dns {
        self.nameserver = Some(addr);
        self
    }

    /// Resolves again when the answer's TTL runs out, but no sooner than
    /// `min` and no later than `max` after the last resolution (defaults
    /// [`DEFAULT_MIN_REFRESH`], 1 s, and [`DEFAULT_MAX_REFRESH`], 60 s).
    pub fn refresh(mut self, min: Duration, max: Duration) -> Dns {
        self.min_refresh = min;
        self.max_refresh = max.max(min);
        self
    }

    fn resolver(&self) -> Result<TokioResolver, RpcError> {
        let failed = |e: &dyn std::fmt::Display| RpcError::Discovery {
            message: format!("could not set up the DNS resolver: {e}"),
        };
        let mut builder = match self.nameserver {
            Some(addr) => {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                let config = ResolverConfig::from_name_servers(vec![server]);
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            }
            None => TokioResolver::builder_tokio().map_err(|e| failed(&e))?,
        };
        // A server that does not answer costs 4 s, not hickory's 10 s and
        // more: a discovery source must not stall a channel's start.
        let options = builder.options_mut();
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 2;
        builder.build().map_err(|e| failed(&e))
    }

    /// One resolution: the endpoints by key (their address), and how long
    /// the answer may be kept.
    async fn resolve(
        &self,
        resolver: &TokioResolver,
    ) -> Result<(BTreeMap<String, Endpoint>, Duration), RpcError> {
        let failed = |name: &str, e: &dyn std::fmt::Display| RpcError::Discovery {
            message: format!("{name} did not resolve: {e}"),
        };
        let mut endpoints = BTreeMap::new();
        let mut put = |addr: SocketAddr, weight: u32| {
            let endpoint = Endpoint::new(addr.to_string()).weight(weight);
            endpoints.insert(addr.to_string(), endpoint);
        };
        let valid_until = match &self.target {
            Target::Host(Err(message)) => {
                return Err(RpcError::Discovery {
                    message: message.clone(),
                });
            }
            Target::Host(Ok((name, port))) => match resolver.lookup_ip(name.as_str()).await {
                Ok(lookup) => {
                    lookup
                        .iter()
                        .for_each(|ip| put(SocketAddr::new(ip, *port), 1));
                    Some(lookup.valid_until())
                }
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => None,
                Err(e) => return Err(failed(name, &e)),
            },
            Target::Srv(name) => match resolver.srv_lookup(name.as_str()).await {
                Ok(lookup) => {
                    let records: Vec<_> = lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::SRV(srv) => Some(srv.clone()),
                            _ => None,
                        })
                        .collect();
                    let first = records.iter().map(|srv| srv.priority).min();
                    // A target of "." means no service there (RFC 2782).
                    let targets = records
                        .iter()
                        .filter(|srv| Some(srv.priority) == first && !srv.target.is_root());
                    // Each target looked up at once; one that does not
                    // resolve is left out, not the whole answer.
                    let lookups = targets.map(|srv| async move {
                        let target = srv.target.to_utf8();
                        match resolver.lookup_ip(target.as_str()).await {
                            Ok(ips) => ips.iter().map(|ip| (ip, srv)).collect(),
                            Err(e) => {
                                tracing::warn!("{}; left out", failed(&target, &e));
                                Vec::new()
                            }
                        }
                    });
                    for (ip, srv) in futures::future::join_all(lookups)
                        .await
                        .into_iter()
                        .flatten()
                    {
                        put(SocketAddr::new(ip, srv.port), u32::from(srv.weight));
                    }
                    Some(lookup.valid_until())
                }
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => None,
                Err(e) => return Err(failed(name, &e)),
            },
        };
        let ttl = valid_until
            .map(|at| at.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or(self.min_refresh);
        Ok((endpoints, ttl.clamp(self.min_refresh, self.max_refresh)))
    }
}

impl Discover for Dns {
    fn watch(self) -> BoxStream<'static, Result<Vec<Change>, RpcError>> {
        struct State {
            dns: Dns,
            resolver: Option<TokioResolver>,
            known: BTreeMap<String, Endpoint>,
            /// When to resolve again; `None` before the first time.
            wait: Option<Duration>,
        }
        let state = State {
            dns: self,
            resolver: None,
            known: BTreeMap::new(),
            wait: None,
        };
        futures::stream::unfold(state, |mut state| async move {
            loop {
                let first = state.wait.is_none();
                if let Some(wait) = state.wait {
                    tokio::time::sleep(wait).await;
                }
                state.wait = Some(state.dns.min_refresh);
                let resolver = match &state.resolver {
                    Some(resolver) => resolver,
                    None => match state.dns.resolver() {
                        Ok(resolver) => state.resolver.insert(resolver),
                        Err(e) => return Some((Err(e), state)),
                    },
                };
                match state.dns.resolve(resolver).await {
                    Ok((endpoints, ttl)) => {
                        state.wait = Some(ttl);
                        let changes = diff(&state.known, &endpoints);
                        state.known = endpoints;
                        // The first answer is sent even if empty: the
                        // channel waits for it.
                        if first || !changes.is_empty() {
                            return Some((Ok(changes), state));
                        }
                    }
                    Err(e) => return Some((Err(e), state)),
                }
            }
        })
        .boxed()
    }
}
