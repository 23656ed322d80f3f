//! Calls as a [`tower_service::Service`] sees them, so that any
//! [`tower_layer::Layer`] can wrap a server's services
//! ([`ServerBuilder::layer`](crate::ServerBuilder::layer)).
//!
//! The innermost service routes a [`Call`] to the generated `<Trait>Server`
//! it names and answers with its [`Reply`]. Layers see the call's names,
//! metadata, peer, deadline and typed [`Extensions`] before it runs, and the
//! reply's status after; an error a layer returns becomes the call's status
//! (tower's timeout: DEADLINE_EXCEEDED, load shedding: RESOURCE_EXHAUSTED,
//! a [`Rejection`]: its own, anything else: INTERNAL). A server without
//! layers never builds a `Call`: this module costs it nothing.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::time::Instant;
use tower_service::Service as TowerService;

use super::interceptor::{Peer, Rejection};
use super::router::Router;
use crate::envelope::Status;
use crate::metadata::Metadata;
use crate::service::{Reply, Request};
use crate::status::Code;

/// The error type layers return, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One call on its way to its service, as a layer sees it.
#[derive(Debug)]
pub struct Call {
    request: Request,
    /// The names as they came, in the request's own buffer: no copies.
    service: Bytes,
    method: Bytes,
    metadata: Bytes,
    peer: Arc<Peer>,
    deadline: Option<Instant>,
    extensions: Extensions,
}

impl Call {
    /// `service` and `method` are UTF-8 (the envelope decoder checked).
    pub(crate) fn new(
        request: Request,
        service: Bytes,
        method: Bytes,
        metadata: Bytes,
        peer: Arc<Peer>,
        deadline: Option<Instant>,
    ) -> Self {
        Call {
            request,
            service,
            method,
            metadata,
            peer,
            deadline,
            extensions: Extensions::default(),
        }
    }

    /// The service the call names.
    pub fn service(&self) -> &str {
        text(&self.service)
    }

    /// The method the call names.
    pub fn method(&self) -> &str {
        text(&self.method)
    }

    /// The pairs the client set with
    /// [`Channel::with_metadata`](crate::Channel::with_metadata).
    pub fn metadata(&self) -> Metadata<'_> {
        Metadata::new(&self.metadata)
    }

    /// Who sent the call.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// When the server stops the call, if the client gave it a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The request id the client chose.
    pub fn id(&self) -> u64 {
        self.request.id()
    }

    /// The encoded arguments (docs/PROTOCOL.md, "Values").
    pub fn body(&self) -> &[u8] {
        self.request.body()
    }

    /// Values layers attach to the call, by type.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Values layers attach to the call, by type, to change.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// An answer to this call with `code` and `message`, for a layer that
    /// answers a call itself instead of passing it on.
    pub fn answer(&self, code: Code, message: &str) -> Reply {
        Reply::error(self.request.id(), Status(code.wire()), message)
    }
}

/// Values of any type attached to a [`Call`], at most one per type.
#[derive(Default)]
pub struct Extensions {
    by_type: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.by_type.len())
            .finish()
    }
}

impl Extensions {
    /// Attaches `value`, returning the value of its type attached before.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.by_type
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast().ok().map(|old| *old))
    }

    /// Whether no value is attached.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }

    /// The value of type `T`, if one is attached.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.by_type.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// Takes the value of type `T` off, if one is attached.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        let value = self.by_type.remove(&TypeId::of::<T>())?;
        value.downcast().ok().map(|value| *value)
    }
}

/// The future of a boxed call service.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

/// A call service with its types erased: what every layer wraps (tower's
/// own `BoxService`).
pub type BoxCallService = tower::util::BoxService<Call, Reply, BoxError>;

/// Boxes `service`, its errors boxed too.
pub(crate) fn boxed<S>(service: S) -> BoxCallService
where
    S: TowerService<Call, Response = Reply> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCallService::new(tower::ServiceExt::map_err(
        service,
        |e: S::Error| -> BoxError { e.into() },
    ))
}

/// A layer, applied when the server is built: its services are known only
/// then.
pub(crate) type Wrap = Box<dyn FnOnce(BoxCallService) -> BoxCallService + Send>;

/// The innermost service: routes each call to its service's method.
pub(crate) struct Routed {
    pub(crate) router: Arc<Router>,
}

impl TowerService<Call> for Routed {
    type Response = Reply;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let Call {
            request,
            service,
            method,
            extensions,
            ..
        } = call;
        let (id, service, method) = (request.id(), text(&service), text(&method));
        let Some(target) = self.router.get(service) else {
            let message = format!("the server has no service `{service}`");
            return Box::pin(
                async move { Ok(Reply::error(id, Status::UNKNOWN_SERVICE, &message)) },
            );
        };
        match target.call(method, request) {
            Some(future) => Box::pin(async move {
                // Attached when first polled, which is within the call's
                // context even where a layer (tower's buffer) calls this
                // service on a task of its own.
                crate::context::attach(extensions);
                Ok(future.await)
            }),
            None => {
                let message = format!("service `{service}` has no method `{method}`");
                Box::pin(async move { Ok(Reply::error(id, Status::UNKNOWN_METHOD, &message)) })
            }
        }
    }
}

/// A name from a request, which the envelope decoder checked is UTF-8.
fn text(name: &[u8]) -> &str {
    std::str::from_utf8(name).unwrap_or_default()
}

/// Runs `call` through the layered service: waits until it is ready (a
/// concurrency or rate limit may make it wait; the wait holds the service,
/// so calls queue in order), starts the call, and turns an error into the
/// call's status.
pub(crate) async fn run(service: Arc<tokio::sync::Mutex<BoxCallService>>, call: Call) -> Reply {
    let id = call.request.id();
    let started = {
        let mut service = service.lock().await;
        match poll_fn(|cx| TowerService::poll_ready(&mut *service, cx)).await {
            Ok(()) => Ok(TowerService::call(&mut *service, call)),
            Err(e) => Err(e),
        }
    };
    let ended = match started {
        Ok(future) => future.await,
        Err(e) => Err(e),
    };
    ended.unwrap_or_else(|e| refused(id, &e))
}

/// The reply for a layer's error.
fn refused(id: u64, error: &BoxError) -> Reply {
    if error.is::<tower::timeout::error::Elapsed>() {
        return Reply::error(
            id,
            Status::DEADLINE_EXCEEDED,
            "the server's timeout for the call elapsed",
        );
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        return Reply::error(id, Status::RESOURCE_EXHAUSTED, "the server is overloaded");
    }
    if let Some(rejection) = error.downcast_ref::<Rejection>() {
        return Reply::refused(id, rejection);
    }
    tracing::warn!(request_id = id, "a layer failed the call: {error}");
    Reply::error(id, Status::INTERNAL, &error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_hold_one_value_per_type() {
        let mut extensions = Extensions::default();
        assert_eq!(extensions.insert(7u32), None);
        assert_eq!(extensions.insert("user"), None);
        assert_eq!(extensions.insert(8u32), Some(7));
        assert_eq!(extensions.get::<u32>(), Some(&8));
        assert_eq!(extensions.get::<&str>(), Some(&"user"));
        assert_eq!(extensions.remove::<u32>(), Some(8));
        assert_eq!(extensions.get::<u32>(), None);
    }
}
