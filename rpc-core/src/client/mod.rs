//! The client side: a [`Channel`] is one multiplexed connection that any
//! number of generated clients and tasks share.

mod dispatch;
mod limit;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::ToSocketAddrs;
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::envelope::{self, Status};
use crate::error::RpcError;
use crate::frame::DEFAULT_MAX_FRAME_LENGTH;
use crate::transport;
use dispatch::{Answer, Closed, Outgoing, Response};
use limit::CallLimit;

/// Default time allowed for the server's handshake after the TCP connect.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Room for a request header, so that small calls fit their first buffer.
const REQUEST_CAPACITY: usize = 128;

/// One connection to a server, shared by every clone.
///
/// Many calls can be in flight at once; each carries its own request id and
/// replies may arrive in any order. Cloning is cheap (one reference count).
/// The connection closes when the last clone is dropped; if it breaks, calls
/// in flight fail at once with [`RpcError::ConnectionClosed`], and every
/// later call on this channel with [`RpcError::NotProcessed`]. When the
/// server shuts down gracefully, calls it had read still get their replies,
/// and the others fail with [`RpcError::NotProcessed`]: safe to retry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// # let server = rpc_core::Server::builder().bind("127.0.0.1:0").await?;
/// # let addr = server.local_addr();
/// # tokio::spawn(server.serve());
/// use rpc_core::Channel;
///
/// let channel = Channel::builder()
///     .max_frame_length(1024 * 1024)
///     .connect(addr)
///     .await?;
/// let also_channel = channel.clone(); // same connection
/// # drop(also_channel);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    outgoing: mpsc::UnboundedSender<Outgoing>,
    closed: Arc<Closed>,
    /// One permit per call the server will take in flight, when it limits
    /// them; calls beyond wait here rather than be refused.
    permits: Option<Arc<CallLimit>>,
    max_frame_length: usize,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("closed", &self.is_closed())
            .field("max_frame_length", &self.inner.max_frame_length)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Connects with default settings; see [`Channel::builder`] for others.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> Result<Channel, RpcError> {
        Channel::builder().connect(addr).await
    }

    /// Settings for a new channel.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder {
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Whether the connection has ended. A closed channel fails every call.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_closed() || self.inner.outgoing.is_closed()
    }

    /// Calls `method` of `service` with `args` (a tuple of the method's
    /// arguments) and decodes the reply as `R`.
    ///
    /// Generated clients call this; use it directly only to call a service
    /// without its trait. The request is encoded when the future is first
    /// polled, so a future that is never polled sends nothing. If the
    /// server limits the calls in flight per connection (it says so in its
    /// handshake), a call beyond the limit waits here for an earlier one to
    /// be answered.
    pub async fn call<A, R>(&self, service: &str, method: &str, args: A) -> Result<R, RpcError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        if let Some(permits) = &self.inner.permits {
            // Given back by the reader when the reply arrives.
            permits.acquire().await.map_err(|_| self.not_processed())?;
        }
        let receiver = self.send(service, method, &args).inspect_err(|_| {
            if let Some(permits) = &self.inner.permits {
                permits.release();
            }
        })?;
        drop(args);
        match receiver.await {
            Ok(Answer::Response(response)) => response_into_result(response, service, method),
            Ok(Answer::NotProcessed) => Err(self.not_processed()),
            Err(_) => Err(self.closed_error()),
        }
    }

    fn send(
        &self,
        service: &str,
        method: &str,
        args: &(impl Serialize + ?Sized),
    ) -> Result<oneshot::Receiver<Answer>, RpcError> {
        if self.inner.closed.is_closed() {
            return Err(self.not_processed());
        }
        let inner = &*self.inner;
        let mut frame = BytesMut::with_capacity(REQUEST_CAPACITY);
        envelope::encode_request(&mut frame, service, method, args, inner.max_frame_length)?;
        let (reply, receiver) = oneshot::channel();
        inner
            .outgoing
            .send(Outgoing { frame, reply })
            .map_err(|_| self.not_processed())?;
        Ok(receiver)
    }

    /// The error of a call that was never sent or never read.
    fn not_processed(&self) -> RpcError {
        RpcError::NotProcessed {
            reason: self.inner.closed.reason(),
        }
    }

    /// The error of a call whose connection ended before its reply.
    fn closed_error(&self) -> RpcError {
        RpcError::ConnectionClosed {
            reason: self.inner.closed.reason(),
        }
    }
}

fn response_into_result<R: DeserializeOwned>(
    response: Response,
    service: &str,
    method: &str,
) -> Result<R, RpcError> {
    let Response { status, body } = response;
    let message = || String::from_utf8_lossy(&body).into_owned();
    Err(match status {
        Status::OK => {
            return codec::decode(&body).map_err(|source| RpcError::Decode {
                what: format!("the reply of {service}.{method}"),
                source,
            });
        }
        Status::UNKNOWN_SERVICE => RpcError::UnknownService {
            service: service.to_owned(),
        },
        Status::UNKNOWN_METHOD => RpcError::UnknownMethod {
            service: service.to_owned(),
            method: method.to_owned(),
        },
        Status::BAD_REQUEST => RpcError::BadRequest { message: message() },
        Status::HANDLER_PANICKED => RpcError::HandlerPanicked { message: message() },
        Status::INTERNAL => RpcError::Internal { message: message() },
        Status::RESOURCE_EXHAUSTED => RpcError::ResourceExhausted { message: message() },
        Status(other) => RpcError::Internal {
            message: format!("unknown status {other}: {}", message()),
        },
    })
}

/// Settings for a [`Channel`]; made by [`Channel::builder`].
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    max_frame_length: usize,
    handshake_timeout: Duration,
}

impl ChannelBuilder {
    /// Largest frame payload this side sends or accepts, in bytes (default
    /// [`DEFAULT_MAX_FRAME_LENGTH`](crate::DEFAULT_MAX_FRAME_LENGTH), 16 MiB).
    ///
    /// A call whose arguments would exceed it fails locally with
    /// [`RpcError::FrameTooLarge`]; a larger reply closes the connection.
    pub fn max_frame_length(mut self, bytes: usize) -> Self {
        self.max_frame_length = bytes;
        self
    }

    /// Time allowed for the server's handshake once TCP is connected
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Opens the connection. Must be called within a tokio runtime, which
    /// runs the connection's tasks.
    pub async fn connect<A: ToSocketAddrs>(self, addr: A) -> Result<Channel, RpcError> {
        let connected =
            transport::connect(addr, self.max_frame_length, self.handshake_timeout).await?;
        let permits = match connected.call_limit {
            0 => None,
            limit => Some(Arc::new(CallLimit::new(limit.into()))),
        };
        let (outgoing, closed) =
            dispatch::spawn(connected.reader, connected.writer, permits.clone());
        Ok(Channel {
            inner: Arc::new(Inner {
                outgoing,
                closed,
                permits,
                max_frame_length: self.max_frame_length,
            }),
        })
    }
}
