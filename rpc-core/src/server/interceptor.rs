//! The hook that sees each call before any handler does: authentication
//! and authorisation live here.

use std::cell::RefCell;
use std::fmt;

use super::layer::Extensions;
use crate::envelope::Status;
use crate::metadata::Metadata;
use crate::status::Code;
use crate::transport::{PeerAddr, PeerIdentity};

/// Decides, before routing, whether a call may run; set with
/// [`ServerBuilder::interceptor`](crate::ServerBuilder::interceptor).
///
/// Any `Fn(&CallInfo<'_>) -> Result<(), Rejection>` is one. It runs on the
/// connection's reading task for every call, so it must be quick and must
/// not block; a call it rejects is answered at once and no handler code
/// runs for it.
pub trait Interceptor: Send + Sync + 'static {
    /// `Ok(())` lets the call through; a [`Rejection`] answers it.
    fn check(&self, call: &CallInfo<'_>) -> Result<(), Rejection>;
}

impl<F> Interceptor for F
where
    F: Fn(&CallInfo<'_>) -> Result<(), Rejection> + Send + Sync + 'static,
{
    fn check(&self, call: &CallInfo<'_>) -> Result<(), Rejection> {
        self(call)
    }
}

/// What an [`Interceptor`] sees of a call, and where it leaves what the
/// handler should know ([`CallInfo::attach`]).
#[derive(Debug)]
pub struct CallInfo<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: &'a str,
    pub(crate) metadata: Metadata<'a>,
    pub(crate) peer: &'a Peer,
    pub(crate) attached: &'a RefCell<Option<Extensions>>,
}

impl<'a> CallInfo<'a> {
    /// The service the call names (it may not exist: routing comes after).
    pub fn service(&self) -> &'a str {
        self.service
    }

    /// The method the call names.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The pairs the client set with
    /// [`Channel::with_metadata`](crate::Channel::with_metadata).
    pub fn metadata(&self) -> Metadata<'a> {
        self.metadata
    }

    /// Who sent the call.
    pub fn peer(&self) -> &'a Peer {
        self.peer
    }

    /// Attaches `value` to the call, for its handler to read with
    /// [`CallContext::extensions`](crate::CallContext::extensions) (and
    /// layers with [`Call::extensions`](crate::Call::extensions)): the
    /// "authenticate once, read the principal in the handler" flow. One
    /// value per type; a later one of the same type replaces it. Kept only
    /// if every interceptor lets the call through.
    ///
    /// ```
    /// use rpc_core::{CallInfo, Rejection, Server};
    ///
    /// /// Who a call is from, as the token said.
    /// struct User(String);
    ///
    /// let server = Server::builder().interceptor(|call: &CallInfo<'_>| {
    ///     match call.metadata().get("authorization") {
    ///         Some(b"Bearer ana-token") => {
    ///             call.attach(User("ana".to_owned()));
    ///             Ok(())
    ///         }
    ///         _ => Err(Rejection::unauthenticated("who are you?")),
    ///     }
    /// });
    /// # drop(server);
    /// ```
    pub fn attach<T: Send + Sync + 'static>(&self, value: T) {
        self.attached
            .borrow_mut()
            .get_or_insert_with(Extensions::default)
            .insert(value);
    }
}

/// The client at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    addr: PeerAddr,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    identity: PeerIdentity,
}

impl Peer {
    pub(crate) fn new(addr: PeerAddr, identity: PeerIdentity) -> Self {
        Peer { addr, identity }
    }

    /// The client's address: TCP, a Unix socket, or another transport's.
    pub fn addr(&self) -> &PeerAddr {
        &self.addr
    }

    /// Under mutual TLS, the certificate chain the client presented (leaf
    /// first), which the TLS handshake has already checked against the
    /// server's client CA certificates; `None` without TLS or when the
    /// client presented none.
    #[cfg(feature = "tls")]
    pub fn certificates(&self) -> Option<&[crate::tls::CertificateDer<'static>]> {
        self.identity.certificates.as_deref()
    }
}

/// An [`Interceptor`]'s refusal of a call; the client receives it as
/// [`RpcError::Status`](crate::RpcError::Status) with
/// [`Code::Unauthenticated`] or [`Code::PermissionDenied`] and
/// the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub(crate) status: Status,
    pub(crate) message: String,
}

impl Rejection {
    /// The call carries no valid credentials.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Rejection {
            status: Status::UNAUTHENTICATED,
            message: message.into(),
        }
    }

    /// The caller is known but may not make this call.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Rejection {
            status: Status::PERMISSION_DENIED,
            message: message.into(),
        }
    }

    /// A refusal with any status, e.g. [`Code::ResourceExhausted`] from a
    /// quota check. Returned as a layer's error
    /// ([`ServerBuilder::layer`](crate::ServerBuilder::layer)) or a
    /// handler's (`Result<T, Rejection>`, see
    /// [`rpc_service`](crate::rpc_service)), it becomes the call's status
    /// too. [`Code::Ok`] is no refusal: it is answered as
    /// [`Code::Internal`], since an OK status would make the client read
    /// the message as the call's value.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        let message = message.into();
        if code == Code::Ok {
            return Rejection {
                status: Status::INTERNAL,
                message: format!("refused with status OK: {message}"),
            };
        }
        Rejection {
            status: Status(code.wire()),
            message,
        }
    }

    /// The status the call is answered with.
    pub fn code(&self) -> Code {
        Code::from_wire(self.status.0).unwrap_or(Code::Internal)
    }

    /// The message the caller receives.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::error::Error for Rejection {}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_with_status_ok_is_answered_as_internal() {
        let rejection = Rejection::new(Code::Ok, "fine");
        assert_eq!(rejection.code(), Code::Internal);
        assert_eq!(rejection.message(), "refused with status OK: fine");
        let quota = Rejection::new(Code::ResourceExhausted, "over quota");
        assert_eq!(quota.code(), Code::ResourceExhausted);
        assert_eq!(quota.message(), "over quota");
    }
}
