//! A fixed list of endpoints.

use futures::StreamExt;
use futures::stream::BoxStream;

use super::{Change, Discover, Endpoint};
use crate::error::RpcError;

/// A fixed list of endpoints, each keyed by its address.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// # let a = rpc_core::Server::builder().bind("127.0.0.1:0").await?;
/// # let b = rpc_core::Server::builder().bind("127.0.0.1:0").await?;
/// # let (a_addr, b_addr) = (a.local_addr().to_string(), b.local_addr().to_string());
/// # tokio::spawn(a.serve());
/// # tokio::spawn(b.serve());
/// use rpc_core::{Channel, discovery::Static};
///
/// let channel = Channel::balanced(Static::new([a_addr, b_addr])).await?;
/// # drop(channel);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Static {
    endpoints: Vec<Endpoint>,
}

impl Static {
    /// The endpoints at `addresses` (`host:port`), each of weight 1.
    pub fn new<A: Into<String>>(addresses: impl IntoIterator<Item = A>) -> Static {
        Static::endpoints(addresses.into_iter().map(Endpoint::new))
    }

    /// The endpoints `endpoints`, with their weights and metadata.
    pub fn endpoints(endpoints: impl IntoIterator<Item = Endpoint>) -> Static {
        Static {
            endpoints: endpoints.into_iter().collect(),
        }
    }
}

impl Discover for Static {
    fn watch(self) -> BoxStream<'static, Result<Vec<Change>, RpcError>> {
        let all = self
            .endpoints
            .into_iter()
            .map(|endpoint| Change::Insert {
                key: endpoint.address.clone(),
                endpoint,
            })
            .collect();
        // The one batch, then nothing more, ever.
        futures::stream::iter([Ok(all)])
            .chain(futures::stream::pending())
            .boxed()
    }
}
