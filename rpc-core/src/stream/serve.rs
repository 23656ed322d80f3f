//! The server's half of a stream call, as the generated code runs it:
//! check the request's stream flags against the method, hand the handler
//! the client's stream, and send the stream it returns.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CallStreams, Failed, Pumped, Streaming, pump};
use crate::server::Rejection;
use crate::service::{Reply, Request, ResponseFuture};

/// The streams a call opened, as the generated code passes them on.
pub struct Opened(Option<CallStreams>);

/// What a method's handler returns, and how the call ends with it.
pub trait Output: Send + 'static {
    /// Whether the method returns a stream.
    const STREAM: bool;

    /// Sends what is left to send and makes the call's answer.
    fn finish(self, request: Request, streams: Opened) -> impl Future<Output = Reply> + Send;
}

/// A method's output that is one value.
pub struct Unary<R>(pub R);

/// A method's output that is a stream.
pub struct Stream<T>(pub Streaming<T>);

/// A method's output that is a stream, or an error before it.
pub struct StreamOrError<T, E>(pub Result<Streaming<T>, E>);

impl<R: Serialize + Send + 'static> Output for Unary<R> {
    const STREAM: bool = false;

    async fn finish(self, request: Request, _: Opened) -> Reply {
        request.reply(&self.0)
    }
}

impl<T> Output for Stream<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    const STREAM: bool = true;

    async fn finish(self, request: Request, streams: Opened) -> Reply {
        match send(self.0, &request, streams).await {
            Ok(()) => request.reply(&()),
            Err(reply) => reply,
        }
    }
}

impl<T, E> Output for StreamOrError<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + Send + 'static,
{
    const STREAM: bool = true;

    async fn finish(self, request: Request, streams: Opened) -> Reply {
        match self.0 {
            // Before any item: the client reads the answer as the error.
            Err(e) => request.reply(&Result::<(), E>::Err(e)),
            Ok(stream) => match send(stream, &request, streams).await {
                Ok(()) => request.reply(&Result::<(), E>::Ok(())),
                Err(reply) => reply,
            },
        }
    }
}

/// A handler's refusal (`Result<_, Rejection>`) comes before anything
/// else of the call: no stream opens.
impl<O: Output> Output for Result<O, Rejection> {
    const STREAM: bool = O::STREAM;

    async fn finish(self, request: Request, streams: Opened) -> Reply {
        match self {
            Ok(output) => output.finish(request, streams).await,
            Err(rejection) => Reply::refused(request.id(), &rejection),
        }
    }
}

/// Sends `stream` as the call's, opening it at once.
async fn send<T>(stream: Streaming<T>, request: &Request, streams: Opened) -> Result<(), Reply>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let streams = streams.0.expect("checked against the flags");
    let credit = streams.credit.clone().expect("checked against the flags");
    let mut source = stream.into_items();
    let link = streams.link.clone();
    let pumped = pump(
        &mut source,
        request.id(),
        &credit,
        &*link,
        request.max_frame_length(),
        true,
    )
    .await;
    // The producer is dropped before the answer goes: it may hold a
    // handle the client's next call needs.
    drop(source);
    match pumped {
        Ok(Pumped::Ended) => Ok(()),
        // The connection is going; the answer will not be read.
        Ok(Pumped::Stopped) => Err(Reply::internal(request.id(), "the stream stopped")),
        Err(Failed::Panicked(message)) => {
            tracing::warn!(
                request_id = request.id(),
                "stream producer panicked: {message}"
            );
            Err(Reply::panicked(request.id(), &message))
        }
        Err(Failed::Item(reason)) => {
            tracing::warn!(request_id = request.id(), "stream ended early: {reason}");
            Err(Reply::internal(request.id(), &reason))
        }
    }
}

/// Decodes the arguments, runs a handler that may take the client's
/// stream (`takes_stream`) and may return one, and sends what it returns.
/// A request whose stream flags do not match the method is refused.
pub fn handle_streaming<A, U, O, F, Fut>(
    mut request: Request,
    takes_stream: bool,
    handler: F,
) -> ResponseFuture
where
    A: DeserializeOwned + Send + 'static,
    U: DeserializeOwned + Send + 'static,
    O: Output,
    F: FnOnce(A, Option<Streaming<U>>) -> Fut + Send + 'static,
    Fut: Future<Output = O> + Send + 'static,
{
    Box::pin(async move {
        let streams = request.streams.take();
        let sends = streams.as_ref().is_some_and(|s| s.inbound.is_some());
        let reads = streams.as_ref().is_some_and(|s| s.credit.is_some());
        if sends != takes_stream || reads != O::STREAM {
            let say = |yes: bool| if yes { "a stream" } else { "no stream" };
            return Reply::bad_request(
                request.id(),
                &format!(
                    "the method takes {} and returns {}, but the request sends {} and reads {}",
                    say(takes_stream),
                    say(O::STREAM),
                    say(sends),
                    say(reads),
                ),
            );
        }
        let args = match request.decode::<A>() {
            Ok(args) => args,
            Err(rejection) => return rejection,
        };
        // The arguments are decoded; don't hold the frame while the handler runs.
        request.body = bytes::Bytes::new();
        let input = streams
            .as_ref()
            .and_then(|s| s.inbound.clone())
            .map(|inbound| Streaming::remote(inbound, None));
        let output = handler(args, input).await;
        output.finish(request, Opened(streams)).await
    })
}
