//! Where the servers of a balanced [`Channel`](crate::Channel) are: a
//! [`Discover`] source tells it which endpoints exist as they come and go.
//!
//! The toolkit ships three sources: [`Static`], a fixed list; `Dns`
//! (cargo feature `dns`, on by default), names re-resolved as their
//! records' TTLs run out; and `Etcd` (cargo feature `etcd`), a prefix that
//! servers register under. Any other registry (Consul, Nacos, Kubernetes
//! endpoints) plugs in as a stream of [`Change`] batches: see [`Discover`].
//! docs/CLUSTER.md says how to run a service on several machines.

#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "etcd")]
mod etcd;
mod list;

use std::collections::BTreeMap;

use futures::stream::BoxStream;

use crate::error::RpcError;

#[cfg(feature = "dns")]
pub use dns::{DEFAULT_MAX_REFRESH, DEFAULT_MIN_REFRESH, Dns};
#[cfg(feature = "etcd")]
pub use etcd::{DEFAULT_LEASE_TTL, Etcd, Registration, RegistrationBuilder};
pub use list::Static;

/// A source of endpoints for [`Channel::balanced`](crate::Channel::balanced).
///
/// [`watch`](Discover::watch) turns it into a stream of batches of
/// changes. The first batch is the whole set at the start (it may be
/// empty: servers may register later); each later batch is what changed
/// since, applied at once. An `Err` item is logged and the endpoints known
/// stay as they are (a registry that is down must not empty a cluster);
/// the source is expected to recover by itself, as [`Static`], `Dns` and
/// `Etcd` do. A stream that ends leaves the last set in place for good.
///
/// Any boxed stream of batches is a source, so a registry of your own
/// needs no new type:
///
/// ```
/// use futures::StreamExt;
/// use rpc_core::discovery::{Change, Endpoint};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// # let server = rpc_core::Server::builder().bind("127.0.0.1:0").await?;
/// # let addr = server.local_addr().to_string();
/// # tokio::spawn(server.serve());
/// // One endpoint now; a real registry would go on sending changes.
/// let first = vec![Change::Insert {
///     key: "node-1".to_owned(),
///     endpoint: Endpoint::new(addr).weight(2),
/// }];
/// let changes = futures::stream::iter([Ok(first)]).chain(futures::stream::pending());
/// let channel = rpc_core::Channel::balanced(changes.boxed()).await?;
/// # drop(channel);
/// # Ok(())
/// # }
/// ```
pub trait Discover: Send + 'static {
    /// The changes of this source, in batches, the first being the set at
    /// the start.
    fn watch(self) -> BoxStream<'static, Result<Vec<Change>, RpcError>>;
}

impl Discover for BoxStream<'static, Result<Vec<Change>, RpcError>> {
    fn watch(self) -> BoxStream<'static, Result<Vec<Change>, RpcError>> {
        self
    }
}

/// One change of the endpoints a source knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `endpoint` exists under `key`; a key already known is replaced (its
    /// connection is kept if the address is the same).
    Insert {
        /// What names the endpoint in the source: its address, a registry
        /// key.
        key: String,
        /// Where it is and how much traffic it takes.
        endpoint: Endpoint,
    },
    /// The endpoint under `key` is gone: it gets no new calls, and its
    /// connection closes once the calls on it are answered.
    Remove {
        /// The key it was inserted under.
        key: String,
    },
}

/// A server that calls may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` (or `ip:port`), resolved at each connect.
    pub address: String,
    /// Its share of calls relative to the others (default 1; 0 counts as
    /// 1, and more than [`MAX_WEIGHT`] as that): an endpoint of weight 2 is
    /// picked as if it had half its load.
    pub weight: u32,
    /// Whatever else the source knows (a zone, a version); the balancer
    /// only shows it, in [`EndpointStatus`](crate::EndpointStatus).
    pub metadata: BTreeMap<String, String>,
}

impl Endpoint {
    /// The endpoint at `address`, of weight 1 and no metadata.
    pub fn new(address: impl Into<String>) -> Endpoint {
        Endpoint {
            address: address.into(),
            weight: 1,
            metadata: BTreeMap::new(),
        }
    }

    /// The same endpoint with weight `weight`.
    pub fn weight(mut self, weight: u32) -> Endpoint {
        self.weight = weight;
        self
    }

    /// The same endpoint with the pair `key`/`value` in its metadata.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Endpoint {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// The largest weight an endpoint can have; larger ones count as this.
pub const MAX_WEIGHT: u32 = 10_000;

/// Whether an endpoint a source gave can be used: its address must be
/// `host:port` (at most 255 bytes; a name, an IPv4 address or a bracketed
/// IPv6 address), its key at most 1 KiB, its metadata at most 16 KiB.
/// A registry that holds garbage must not make a balanced channel dial
/// it, or carry megabytes of it in every error.
pub(crate) fn check(key: &str, endpoint: &Endpoint) -> Result<(), String> {
    if key.len() > 1024 {
        return Err(format!("a key of {} bytes", key.len()));
    }
    let address = &endpoint.address;
    let host_ok = |host: &str| match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    let fits = address.len() <= 255
        && address
            .rsplit_once(':')
            .is_some_and(|(host, port)| port.parse::<u16>().is_ok() && host_ok(host));
    if !fits {
        return Err(format!(
            "`{}` under `{key}`, which is not host:port",
            shortened(address, 80)
        ));
    }
    let metadata: usize = endpoint
        .metadata
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if metadata > 16 * 1024 {
        return Err(format!("{metadata} bytes of metadata for {address}"));
    }
    Ok(())
}

/// At most `max` bytes of `text` (cut at a character), marked if cut.
pub(crate) fn shortened(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let kept = crate::envelope::truncate(text, max);
    format!("{kept}... ({} bytes)", text.len())
}

/// The changes that turn the set `old` into `new`, both keyed the same way;
/// for sources that see whole sets (a DNS answer, an etcd listing).
#[cfg_attr(not(any(feature = "dns", feature = "etcd")), allow(dead_code))]
pub(crate) fn diff(
    old: &BTreeMap<String, Endpoint>,
    new: &BTreeMap<String, Endpoint>,
) -> Vec<Change> {
    let removed = old
        .keys()
        .filter(|key| !new.contains_key(*key))
        .map(|key| Change::Remove { key: key.clone() });
    let inserted = new
        .iter()
        .filter(|(key, endpoint)| old.get(*key) != Some(endpoint))
        .map(|(key, endpoint)| Change::Insert {
            key: key.clone(),
            endpoint: endpoint.clone(),
        });
    removed.chain(inserted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[(&str, u32)]) -> BTreeMap<String, Endpoint> {
        entries
            .iter()
            .map(|(a, w)| (a.to_string(), Endpoint::new(*a).weight(*w)))
            .collect()
    }

    #[test]
    fn only_endpoints_at_host_and_port_are_taken() {
        let ok = |address: &str| check("k", &Endpoint::new(address)).is_ok();
        assert!(ok("calc.internal:7878"));
        assert!(ok("10.0.0.1:7878"));
        assert!(ok("[::1]:7878"));
        assert!(ok("node_1.svc:1"));
        assert!(!ok("not an address at all"));
        assert!(!ok("calc.internal"));
        assert!(!ok(":7878"));
        assert!(!ok("calc:99999"));
        assert!(!ok("[not-v6]:1"));
        assert!(!ok(&format!("{}:1", "a".repeat(300))));
        assert!(check(&"k".repeat(2000), &Endpoint::new("a:1")).is_err());
        let big = Endpoint::new("a:1").metadata("k", "v".repeat(20_000));
        assert!(check("k", &big).is_err());
        let long = "é".repeat(100);
        assert!(shortened(&long, 81).starts_with(&"é".repeat(40)));
        assert!(shortened(&long, 81).ends_with("(200 bytes)"));
    }

    #[test]
    fn a_diff_removes_what_went_and_inserts_what_came_or_changed() {
        let old = set(&[("a:1", 1), ("b:1", 1), ("c:1", 1)]);
        let new = set(&[("b:1", 1), ("c:1", 3), ("d:1", 1)]);
        assert_eq!(
            diff(&old, &new),
            vec![
                Change::Remove { key: "a:1".into() },
                Change::Insert {
                    key: "c:1".into(),
                    endpoint: Endpoint::new("c:1").weight(3)
                },
                Change::Insert {
                    key: "d:1".into(),
                    endpoint: Endpoint::new("d:1")
                },
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
