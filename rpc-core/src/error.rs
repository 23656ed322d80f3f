//! The one error type of the toolkit.

use std::io;

use crate::status::{Code, Status};

/// Everything that can go wrong with a remote call, a connection or a server.
///
/// Marked `#[non_exhaustive]`: later versions may add variants, so match
/// with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No connection could be opened to the server (refused, unreachable,
    /// timed out, or the address did not resolve).
    #[error("could not connect to {addr}")]
    Connect {
        /// The address as the caller gave it.
        addr: String,
        /// Why the connection failed.
        #[source]
        source: io::Error,
    },

    /// The connection closed before this call was answered. The call may
    /// or may not have run. (A call made on a channel that was already
    /// closed fails with [`RpcError::NotProcessed`] instead.)
    #[error("connection closed: {reason}")]
    ConnectionClosed {
        /// Why the connection closed, as far as this side knows.
        reason: String,
    },

    /// The call was not run and never will be: the channel was already
    /// closed when it was made, or the server announced it was shutting
    /// down before reading it. Retrying it elsewhere cannot run it twice.
    #[error("the call was not run: {reason}")]
    NotProcessed {
        /// Why the call was not run.
        reason: String,
    },

    /// An I/O error outside an established connection, such as binding a
    /// listener.
    #[error("i/o error")]
    Io(#[source] io::Error),

    /// The peer broke the wire protocol: a wrong handshake, a malformed
    /// envelope, or an unexpected message.
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// The call cannot be made as asked, a mistake on this side: a service
    /// or method name over 255 bytes. Nothing was sent.
    #[error("invalid call: {message}")]
    InvalidCall {
        /// What is wrong with it.
        message: String,
    },

    /// A value could not be encoded for the wire.
    #[error("could not encode {what}")]
    Encode {
        /// What was being encoded (`arguments of Calculator.add`, ...).
        what: String,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },

    /// A reply from the server could not be decoded into the expected type:
    /// usually client and server were built from different trait versions.
    #[error("could not decode {what}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },

    /// A message was larger than the frame limit of the side that checked it.
    #[error("message exceeds the frame limit of {limit} bytes")]
    FrameTooLarge {
        /// The limit in bytes that was exceeded.
        limit: usize,
    },

    /// The server answered the call with a status other than OK (and
    /// other than DEADLINE_EXCEEDED, which is [`RpcError::DeadlineExceeded`]):
    /// no such service or method, arguments it could not decode, a handler
    /// panic, a refusal for lack of resources or of credentials or
    /// permission, a cancel, an internal error. [`Status::code`] says which;
    /// docs/PROTOCOL.md, §4, says which of them guarantee the call did not
    /// run.
    #[error("{0}")]
    Status(Status),

    /// A TLS setting could not be used: unreadable PEM, a key that does not
    /// match its certificate, a server name that is not a name.
    #[error("TLS configuration: {message}")]
    Tls {
        /// What was wrong.
        message: String,
    },

    /// The call did not finish within its deadline
    /// ([`ChannelBuilder::call_timeout`](crate::ChannelBuilder::call_timeout),
    /// [`Channel::with_timeout`](crate::Channel::with_timeout)).
    /// It may or may not have run; the server stops it at the same deadline.
    #[error("the call did not finish within its deadline of {timeout:?}")]
    DeadlineExceeded {
        /// The time the call was given.
        timeout: std::time::Duration,
    },

    /// A call with a deadline was made outside a tokio runtime (under
    /// `futures::executor::block_on`, say), where no timer can run. Make
    /// calls from within a tokio runtime, or enter one first.
    #[error("a call with a deadline needs a tokio runtime to time it; none is running here")]
    NoRuntime,

    /// A blocking client was called on a thread inside a tokio runtime (a
    /// task, `block_on`, `spawn_blocking`), where blocking would stall the
    /// runtime or deadlock on it. Nothing was sent: use the async client
    /// (`<Trait>Client`) there.
    #[error(
        "a blocking client was called from inside a tokio runtime, where it would block the runtime; \
         use the async client there"
    )]
    InsideRuntime,

    /// A discovery source could not say where the servers are (a name did
    /// not resolve, the registry could not be reached or answered
    /// nonsense): from [`Channel::balanced`](crate::Channel::balanced)
    /// when the source's first answer fails, and from the sources of
    /// [`discovery`](crate::discovery) later (a balanced channel logs those
    /// and keeps the endpoints it knows).
    #[error("endpoint discovery failed: {message}")]
    Discovery {
        /// What went wrong.
        message: String,
    },

    /// A server was given two services of one name
    /// ([`ServerBuilder::add_service`](crate::ServerBuilder::add_service)):
    /// calls could not tell them apart. Two traits of one name in
    /// different modules do this; rename one. A service named
    /// `rpc.Reflection` takes the introspection service's name, unless
    /// [`ServerBuilder::introspection`](crate::ServerBuilder::introspection)
    /// is off.
    #[error(
        "two services are named `{name}` on this server (the introspection service counts, as `rpc.Reflection`); service names must be unique"
    )]
    DuplicateService {
        /// The name both services have.
        name: String,
    },
}

impl RpcError {
    /// Whether the call definitely did not run, so that sending it again
    /// (on this channel or elsewhere) cannot run it twice: it was refused
    /// before it was sent or read ([`RpcError::NotProcessed`]), or no
    /// connection could be made ([`RpcError::Connect`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RpcError::NotProcessed { .. } | RpcError::Connect { .. }
        )
    }

    /// Whether the call ran out of time, whichever side noticed first.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RpcError::DeadlineExceeded { .. })
    }

    /// The status this error stands for, if it is one the protocol names
    /// (docs/PROTOCOL.md, §4): the server's answer, or a deadline the
    /// client noticed first ([`Code::DeadlineExceeded`]). `None` for
    /// failures of the connection, of encoding or decoding on this side,
    /// and of configuration, which no server status describes.
    ///
    /// ```
    /// # async fn run(client: rpc_core::Channel) {
    /// use rpc_core::Code;
    ///
    /// match client.call::<_, i64>("Calculator", "add", (2i64, 3i64)).await {
    ///     Ok(sum) => println!("{sum}"),
    ///     Err(e) if e.code() == Some(Code::PermissionDenied) => println!("not for us"),
    ///     Err(e) if e.is_retryable() => println!("not run; try elsewhere: {e}"),
    ///     Err(e) => println!("failed: {e}"),
    /// }
    /// # }
    /// ```
    pub fn code(&self) -> Option<Code> {
        match self {
            RpcError::Status(status) => Some(status.code()),
            RpcError::DeadlineExceeded { .. } => Some(Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// The server's status, if the server answered with one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            RpcError::Status(status) => Some(status),
            _ => None,
        }
    }
}

/// Why the codec could not encode or decode a value.
///
/// Kept opaque so that the codec behind it can change without breaking
/// users; its `Display` says what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CodecError {
    message: String,
}

impl CodecError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
