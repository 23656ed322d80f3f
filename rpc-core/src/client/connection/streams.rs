//! Stream calls over one client connection: opening one, sending the
//! caller's stream under the server's credit, and reading the server's.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::{Closed, Connection, response_into_result};
use crate::client::CallOptions;
use crate::client::deadline::Deadline;
use crate::client::pending::{Answer, Pending, Response};
use crate::codec;
use crate::envelope::{self, FLAG_STREAM_IN, FLAG_STREAM_OUT, Status};
use crate::error::RpcError;
use crate::stream::{Credit, Entry, Failed, Inbound, Link, Pumped, Streaming, Streams, pump};
use crate::transport::Outbox;

/// What a stream of one call needs of the connection.
struct CallLink {
    outbox: Arc<Outbox>,
    pending: Arc<Pending>,
    closed: Arc<Closed>,
    gave_up: Arc<Notify>,
    streams: Arc<Streams>,
    service: String,
    method: String,
    timeout: Option<Duration>,
}

impl Link for CallLink {
    fn send(&self, mut frame: BytesMut) -> bool {
        self.outbox.push(&mut frame, 0).is_ok()
    }

    fn abandon(&self, id: u64) {
        // What the call was sending stops with it (a review's upload went
        // on being pulled after its caller had given up).
        self.streams.remove(id);
        if self.pending.abandon(id).is_some() {
            let mut cancel = BytesMut::new();
            envelope::encode_cancel(&mut cancel, id);
            let _ = self.outbox.push(&mut cancel, 0);
            self.gave_up.notify_one();
        }
    }

    fn poll_end(&self, id: u64, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        self.pending
            .poll_answer(id, cx)
            .map(|answer| self.ended(answer))
    }
}

impl CallLink {
    /// The end of a stream call as its answer says.
    fn ended(
        &self,
        answer: Result<Answer, crate::client::pending::Closed>,
    ) -> Result<(), RpcError> {
        match answer {
            Ok(Answer::Response(response)) if response.status == Status::OK => Ok(()),
            Ok(Answer::Response(response)) => {
                response_into_result::<()>(response, &self.service, &self.method, self.timeout)
            }
            Ok(Answer::NotProcessed) => Err(RpcError::NotProcessed {
                reason: self.closed.reason(),
            }),
            Err(_) => Err(RpcError::ConnectionClosed {
                reason: self.closed.reason(),
            }),
        }
    }
}

/// A stream call whose request is on its way.
pub(crate) struct Opened {
    id: u64,
    link: Arc<CallLink>,
    /// Where the server's stream arrives, if the call returns one.
    inbound: Option<Inbound>,
    deadline: Option<Deadline>,
}

impl Connection {
    /// Sends the request of a stream call: the caller's stream, if any,
    /// goes out on a task of its own as the server grants credit; the
    /// server's, if `output`, is read by what [`Opened`] turns into.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open<A, U>(
        &self,
        service: &str,
        method: &str,
        args: A,
        options: &CallOptions,
        deadline: Option<Deadline>,
        input: Option<Streaming<U>>,
        output: bool,
    ) -> Result<Opened, RpcError>
    where
        A: Serialize,
        U: Serialize + DeserializeOwned + Send + 'static,
    {
        if self.closed.is_closed() {
            return Err(self.not_processed());
        }
        let permit = match &self.permits {
            Some(permits) => Some(
                Deadline::within(deadline, permits.acquire())
                    .await?
                    .map_err(|_| self.not_processed())?,
            ),
            None => None,
        };
        let flags = if input.is_some() { FLAG_STREAM_IN } else { 0 }
            | if output { FLAG_STREAM_OUT } else { 0 };
        let mut frame = self.request(service, method, deadline, options, flags, &args, &[])?;
        let link = Arc::new(CallLink {
            outbox: self.outbox.clone(),
            pending: self.pending.clone(),
            closed: self.closed.clone(),
            gave_up: self.gave_up.clone(),
            streams: self.streams.clone(),
            service: service.to_owned(),
            method: method.to_owned(),
            timeout: options.timeout,
        });
        let credit = input.as_ref().map(|_| Arc::new(Credit::default()));
        let mut inbound = None;
        let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let id = self
            .pending
            .start(permit, waker, |id| {
                // Entered before the request is queued: the reader routes
                // by this entry, and the server may answer at once.
                let opened = output.then(|| {
                    Inbound::unannounced(id, self.stream_window, link.clone() as Arc<dyn Link>)
                });
                self.streams.insert(
                    id,
                    Entry {
                        inbound: opened.clone(),
                        credit: credit.clone(),
                    },
                );
                envelope::set_request_id(&mut frame, id);
                if self.outbox.push(&mut frame, 0).is_err() {
                    self.streams.remove(id);
                    return false;
                }
                // The grant beyond the initial credit follows the request.
                if let Some(opened) = &opened {
                    opened.announce();
                }
                inbound = opened;
                true
            })
            .map_err(|_| self.not_processed())?;
        drop(args);
        super::record_id(id);
        if let (Some(input), Some(credit)) = (input, credit) {
            // In the call's span, which counts the items sent.
            let sending = send_input(input, id, credit, link.clone(), self.max_frame_length);
            tokio::spawn(tracing::Instrument::in_current_span(sending));
        }
        Ok(Opened {
            id,
            link,
            inbound,
            deadline,
        })
    }
}

/// Sends the caller's stream for call `id`, then its end. An item that
/// cannot be sent fails the call with the reason, and cancels it.
async fn send_input<U: Serialize + DeserializeOwned + Send + 'static>(
    input: Streaming<U>,
    id: u64,
    credit: Arc<Credit>,
    link: Arc<CallLink>,
    max_frame_length: usize,
) {
    let mut source = input.into_items();
    match pump(&mut source, id, &credit, &*link, max_frame_length, false).await {
        Ok(Pumped::Ended) => {
            let mut end = BytesMut::new();
            envelope::encode_end(&mut end, id);
            link.send(end);
        }
        Ok(Pumped::Stopped) => {}
        Err(failed) => {
            let reason = match failed {
                Failed::Panicked(message) => format!("its producer panicked: {message}"),
                Failed::Item(reason) => reason,
            };
            tracing::debug!(id, "stream to the server stopped: {reason}");
            let failed = Answer::Response(Response {
                status: Status::INTERNAL,
                schema: None,
                body: bytes::Bytes::from(format!("the call's stream failed: {reason}")),
            });
            if link.pending.finish(id, failed) {
                let mut cancel = BytesMut::new();
                envelope::encode_cancel(&mut cancel, id);
                link.send(cancel);
            }
        }
    }
}

impl Opened {
    /// Waits for the call's answer, as a unary call does.
    pub(crate) async fn answer<R: DeserializeOwned>(self) -> Result<R, RpcError> {
        let Opened {
            id, link, deadline, ..
        } = self;
        let mut give_up = StreamGiveUp {
            link: &link,
            id: Some(id),
        };
        let answer = std::future::poll_fn(|cx| link.pending.poll_answer(id, cx));
        let answer = Deadline::within(deadline, answer).await?;
        give_up.id = None;
        match answer {
            Ok(Answer::Response(response)) => {
                response_into_result(response, &link.service, &link.method, link.timeout)
            }
            Ok(Answer::NotProcessed) => Err(RpcError::NotProcessed {
                reason: link.closed.reason(),
            }),
            Err(_) => Err(RpcError::ConnectionClosed {
                reason: link.closed.reason(),
            }),
        }
    }

    /// Waits until the server's stream opens, or the call answers without
    /// one: `Ok(Ok(stream))`, `Ok(Err(e))` for a method's error before its
    /// stream (`E` is `()` for a method that has none), or the call's error.
    pub(crate) async fn stream<T, E>(self) -> Result<Result<Streaming<T>, E>, RpcError>
    where
        T: DeserializeOwned + Send + 'static,
        E: DeserializeOwned,
    {
        let Opened {
            id,
            link,
            inbound,
            deadline,
        } = self;
        let inbound = inbound.expect("opened with an output stream");
        let mut give_up = StreamGiveUp {
            link: &link,
            id: Some(id),
        };
        let opened = std::future::poll_fn(|cx| {
            if inbound.opened() {
                return Poll::Ready(None);
            }
            // Registered before the answer is looked at, so that an item
            // frame arriving in between wakes this task.
            let _ = inbound.poll_opened(cx);
            if inbound.opened() {
                return Poll::Ready(None);
            }
            link.pending.poll_answer(id, cx).map(Some)
        });
        let answered = Deadline::within(deadline, opened).await?;
        give_up.id = None;
        let answered = match answered {
            // An item frame and the answer can both have come in between
            // the last look and the answer's: the stream opened, and the
            // answer is its end (a review saw a short stream come back
            // empty).
            Some(answer) if inbound.opened() => {
                inbound.finish(link.ended(answer));
                None
            }
            answered => answered,
        };
        let Some(answer) = answered else {
            return Ok(Ok(Streaming::answer(
                inbound,
                deadline.map(|d| (d.at(), d.timeout())),
            )));
        };
        // Answered before any item: refused, failed, or an error of the
        // method's own.
        match answer {
            Ok(Answer::Response(response)) if response.status == Status::OK => {
                let head: Result<(), E> = if response.body.is_empty() {
                    Ok(())
                } else {
                    codec::decode(&response.body).map_err(|source| RpcError::Decode {
                        what: format!("the reply of {}.{}", link.service, link.method),
                        source,
                    })?
                };
                Ok(head.map(|()| Streaming::from_iter(std::iter::empty())))
            }
            answer => match link.ended(answer) {
                Err(e) => Err(e),
                Ok(()) => Ok(Ok(Streaming::from_iter(std::iter::empty()))),
            },
        }
    }
}

/// Armed while a stream call waits to open; dropped armed it cancels it.
struct StreamGiveUp<'a> {
    link: &'a CallLink,
    id: Option<u64>,
}

impl Drop for StreamGiveUp<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.link.abandon(id);
        }
    }
}
