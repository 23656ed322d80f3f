//! One established connection of a [`Channel`](super::Channel): sends a
//! call and turns its answer into a result.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::CallOptions;
use super::deadline::Deadline;
use super::dispatch::{self, Answer, Closed, Keepalive, Outgoing, Response};
use super::limit::CallLimit;
use crate::codec;
use crate::envelope::{self, Status};
use crate::error::RpcError;
use crate::transport::Connected;

/// Room for a request header, so that small calls fit their first buffer.
const REQUEST_CAPACITY: usize = 128;

/// A connection and the tasks that run it.
pub(crate) struct Connection {
    outgoing: mpsc::UnboundedSender<Outgoing>,
    closed: Arc<Closed>,
    /// One permit per call the server will take in flight, when it limits
    /// them; calls beyond wait here rather than be refused.
    permits: Option<Arc<CallLimit>>,
    max_frame_length: usize,
}

impl Connection {
    /// Starts the tasks of a connection that has done its handshake.
    pub(crate) fn start(
        connected: Connected,
        max_frame_length: usize,
        keepalive: Option<Keepalive>,
    ) -> Self {
        let permits = match connected.call_limit {
            0 => None,
            limit => Some(Arc::new(CallLimit::new(limit.into()))),
        };
        let handles = dispatch::spawn(
            connected.reader,
            connected.writer,
            permits.clone(),
            keepalive,
        );
        Connection {
            outgoing: handles.outgoing,
            closed: handles.closed,
            permits,
            max_frame_length,
        }
    }

    /// Whether the connection takes no more calls.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_closed() || self.outgoing.is_closed()
    }

    /// Why it takes no more calls.
    pub(crate) fn close_reason(&self) -> String {
        self.closed.reason()
    }

    /// Sends one call and waits for its answer, by `deadline` if the call
    /// has one (the wait for a permit included). Dropping the future before
    /// the answer sends the server a cancel for the call.
    pub(crate) async fn call<A, R>(
        &self,
        service: &str,
        method: &str,
        args: A,
        options: &CallOptions,
        deadline: Option<Deadline>,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        if let Some(permits) = &self.permits {
            // Given back by the reader when the reply arrives.
            Deadline::within(deadline, permits.acquire())
                .await?
                .map_err(|_| self.not_processed())?;
        }
        // The server is given what is left of the call's time.
        let left = deadline.as_ref().map(Deadline::left);
        let receiver = self
            .send(service, method, &args, left, options)
            .inspect_err(|_| {
                if let Some(permits) = &self.permits {
                    permits.release();
                }
            })?;
        drop(args);
        let mut abandon = CancelOnDrop(Some(&self.outgoing));
        // On time-out the reader still takes the server's (late) answer,
        // and only then gives the call's permit back.
        let answer = Deadline::within(deadline, receiver).await;
        // Answered, or timed out: the server stops the call at the same
        // deadline itself, so no cancel either way.
        abandon.0 = None;
        let answer = answer?;
        match answer {
            Ok(Answer::Response(response)) => {
                response_into_result(response, service, method, options.timeout)
            }
            Ok(Answer::NotProcessed) => Err(self.not_processed()),
            Err(_) => Err(self.closed_error()),
        }
    }

    fn send(
        &self,
        service: &str,
        method: &str,
        args: &(impl Serialize + ?Sized),
        left: Option<Duration>,
        options: &CallOptions,
    ) -> Result<oneshot::Receiver<Answer>, RpcError> {
        if self.closed.is_closed() {
            return Err(self.not_processed());
        }
        let mut frame = BytesMut::with_capacity(REQUEST_CAPACITY);
        envelope::encode_request(
            &mut frame,
            service,
            method,
            left,
            options.metadata(),
            args,
            self.max_frame_length,
        )?;
        let (reply, receiver) = oneshot::channel();
        self.outgoing
            .send(Outgoing::Call { frame, reply })
            .map_err(|_| self.not_processed())?;
        Ok(receiver)
    }

    /// The error of a call that was never sent or never read.
    pub(crate) fn not_processed(&self) -> RpcError {
        RpcError::NotProcessed {
            reason: self.closed.reason(),
        }
    }

    /// The error of a call whose connection ended before its reply.
    fn closed_error(&self) -> RpcError {
        RpcError::ConnectionClosed {
            reason: self.closed.reason(),
        }
    }
}

/// Tells the connection if the call's future is dropped before its
/// answer, so that a cancel goes out. The notice queues behind the request
/// itself, which is what lets the writer order it after the registration.
struct CancelOnDrop<'a>(Option<&'a mpsc::UnboundedSender<Outgoing>>);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(outgoing) = self.0 {
            let _ = outgoing.send(Outgoing::GaveUp);
        }
    }
}

fn response_into_result<R: DeserializeOwned>(
    response: Response,
    service: &str,
    method: &str,
    deadline: Option<Duration>,
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
        Status::DEADLINE_EXCEEDED => RpcError::DeadlineExceeded {
            timeout: deadline.unwrap_or_default(),
        },
        Status::UNAUTHENTICATED => RpcError::Unauthenticated { message: message() },
        Status::PERMISSION_DENIED => RpcError::PermissionDenied { message: message() },
        Status::CANCELLED => RpcError::Cancelled { message: message() },
        Status(other) => RpcError::Internal {
            message: format!("unknown status {other}: {}", message()),
        },
    })
}
