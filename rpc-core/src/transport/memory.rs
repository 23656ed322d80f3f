//! An in-memory transport: a server and its clients in one process, with
//! no socket, for tests and for embedding.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::connector::Connector;
use super::stream::{BoxedStream, PeerAddr};

/// Bytes each direction of an in-memory connection buffers before the
/// writer waits: enough for a batch of small calls.
const PIPE_CAPACITY: usize = 256 * 1024;

/// A connected pair: a [`Connector`] for
/// [`ChannelBuilder::connect_with`](crate::ChannelBuilder::connect_with),
/// and the [`MemoryIncoming`] stream of connections for
/// [`Server::serve_incoming`](crate::Server::serve_incoming). Each connect
/// makes a new pipe; the connector fails with `ConnectionRefused` once the
/// incoming side is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// use rpc_core::{Channel, Server};
///
/// let (connector, incoming) = rpc_core::transport::memory();
/// let server = Server::builder().build()?; // .add_service(...) first
/// tokio::spawn(server.serve_incoming(incoming));
/// let channel = Channel::builder().connect_with(connector).await?;
/// # drop(channel);
/// # Ok(())
/// # }
/// ```
pub fn memory() -> (MemoryConnector, MemoryIncoming) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (
        MemoryConnector { sender },
        MemoryIncoming {
            receiver,
            peer: PeerAddr::Other(Arc::from("memory")),
        },
    )
}

/// The client side of [`memory`].
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    sender: mpsc::UnboundedSender<DuplexStream>,
}

impl Connector for MemoryConnector {
    fn connect(&self) -> Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send + '_>> {
        let (client, server) = tokio::io::duplex(PIPE_CAPACITY);
        let sent = self.sender.send(server);
        Box::pin(async move {
            sent.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "the in-memory server is gone",
                )
            })?;
            Ok(Box::new(client) as BoxedStream)
        })
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

/// The server side of [`memory`]: a stream of the connections made.
#[derive(Debug)]
pub struct MemoryIncoming {
    receiver: mpsc::UnboundedReceiver<DuplexStream>,
    peer: PeerAddr,
}

impl Stream for MemoryIncoming {
    type Item = io::Result<(DuplexStream, PeerAddr)>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let peer = self.peer.clone();
        self.receiver
            .poll_recv(cx)
            .map(|stream| stream.map(|stream| Ok((stream, peer))))
    }
}
