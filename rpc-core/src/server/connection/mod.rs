//! One accepted connection: read requests, start each call, write the
//! replies in batches.
//!
//! A call is polled once where it is read. Most handlers finish without
//! waiting for anything, and answering those in place saves a task spawn and
//! two wake-ups per call; a call that does wait moves to a task of its own,
//! so it never holds up the calls read after it. A call whose first poll
//! does not return quickly (synchronous work before its first `.await`) is
//! noticed by the server's watchdog, and another task reads on meanwhile.

mod calls;
mod reader;
mod streams;
mod writer;

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;

use super::Shared;
use super::interceptor::Peer;
use super::watchdog::Watched;
use crate::envelope;
use crate::transport::{self, Io, PeerAddr};
use calls::Calls;
use reader::{Connection, Role, Stop, drain_started, read_loop};

/// How a connection closed for idleness or by a drain goes on reading
/// (and dropping) what its client sends, so that closing does not reset
/// the connection under replies the client has yet to read.
const LINGER: Duration = Duration::from_secs(10);

/// After the client has finished sending, how often the server pings it
/// while calls still run: a write to a client that has gone entirely fails,
/// and its calls are then dropped, where one that only half-closed gets
/// every reply.
const GONE_PROBE: Duration = Duration::from_millis(500);

/// Serves one connection until it ends, logging why it ended. Once the
/// server drains, the connection ends by the grace deadline at the latest.
pub(crate) async fn serve(io: Io, peer: PeerAddr, shared: Arc<Shared>) {
    let _open = crate::meter::Connection::open(crate::meter::Side::Server);
    let mut drain = shared.drain.clone();
    // One future: `select!` drops the other branch as soon as this one's
    // future completes, and `run` must go on until the deadline itself.
    let grace_over = async {
        let deadline = drain_started(&mut drain).await;
        tokio::time::sleep_until(deadline).await;
    };
    let ended = tokio::select! {
        ended = run(io, peer.clone(), shared.clone()) => ended,
        () = grace_over => Err("the shutdown grace period ended".to_owned()),
    };
    match ended {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(reason) => shared.log_closed(&peer, &reason),
    }
}

/// How the read loop ended without an error.
pub(super) enum Ended {
    /// The client finished sending.
    ByClient,
    /// The server is shutting down.
    Draining,
    /// No call was open and nothing arrived for the idle timeout.
    Idle,
}

async fn run(io: Io, peer: PeerAddr, shared: Arc<Shared>) -> Result<(), String> {
    let accepted = transport::accept(io, &shared.accept).await?;
    let (outbox, stop, mut writing) = writer::spawn(accepted.writer, shared.max_queued_reply_bytes);
    // Let the writer start before the first frame is read: spawned from
    // here, it runs next on this worker only, and a first call that blocks
    // its thread would strand it (calls.rs, `Deferred`).
    tokio::task::yield_now().await;
    let calls = Calls::new(
        shared.clone(),
        outbox,
        Peer::new(peer.clone(), accepted.identity),
    );
    let connection = Arc::new(Connection::new(calls, accepted.reader));
    let watched: Weak<dyn Watched> = Arc::downgrade(&connection) as Weak<dyn Watched>;
    let watching = shared.watchdog.watch(watched);
    // However `run` ends (returning, or dropped at the grace deadline).
    let _cancel_calls = connection.calls.gone.clone().drop_guard();

    let ended = {
        let writer_gone = async { writer_ended((&mut writing).await) };
        tokio::pin!(writer_gone);
        match read_loop(&connection, Role::Own, writer_gone).await {
            Stop::Ended(ended) => ended,
            Stop::Back => unreachable!("only a stand-in gives reading back"),
        }
    };
    // No stand-in from here on.
    drop(watching);
    connection.calls.end_input_streams(match &ended {
        Ok(Ended::ByClient) => "the client finished sending before it ended its stream",
        Ok(Ended::Draining) => "the server is shutting down and reads no more of the stream",
        Ok(Ended::Idle) => "the connection was closed as idle",
        Err(reason) => reason,
    });
    match ended {
        // The client has finished sending: answer the calls it sent, then
        // close. A client that is gone altogether rather than half-closed
        // makes a probe's write fail, and its calls are dropped then.
        Ok(Ended::ByClient) => {
            let calls = &connection.calls;
            let mut probe = tokio::time::interval(GONE_PROBE);
            // Bounded: a client cannot leave work running for ever by
            // sending calls and closing.
            let grace_over = tokio::time::sleep(shared.shutdown_grace);
            tokio::pin!(grace_over);
            let answered = loop {
                tokio::select! {
                    biased;
                    written = &mut writing => break Err(writer_ended(written)),
                    () = calls.running.all_ended() => break Ok(()),
                    () = &mut grace_over => break Err(format!(
                        "calls still running {:?} after the client finished sending",
                        shared.shutdown_grace
                    )),
                    _ = probe.tick() => {
                        let mut ping = BytesMut::new();
                        envelope::encode_ping(&mut ping, 0, false);
                        calls.outbox.send(ping);
                    }
                }
            };
            if let Err(reason) = answered {
                tracing::debug!(%peer, "the client left with calls running: {reason}");
                return Ok(());
            }
            drop(connection);
            let _ = writing.await;
            drop(stop);
            Ok(())
        }
        // Say which requests were read, let those still running answer,
        // then read and drop whatever the client sent meanwhile until it
        // closes, so that closing does not reset the connection under
        // replies it has yet to read. `serve` bounds a drain by the grace
        // period; an idle connection has nothing running.
        Ok(ended @ (Ended::Draining | Ended::Idle)) => {
            let mut notice = BytesMut::new();
            envelope::encode_drain(&mut notice, connection.calls.first_unread());
            connection.calls.outbox.send(notice);
            let reading = connection.read.lock().await.take();
            // The writer ends once its last outbox is gone: ours, and those
            // of the calls still running.
            drop(connection);
            let _ = writing.await;
            drop(stop);
            let Some(mut reading) = reading else {
                return Ok(());
            };
            let linger = async { while let Some(Ok(_)) = reading.frames.next().await {} };
            let _ = tokio::time::timeout(LINGER, linger).await;
            if matches!(ended, Ended::Idle) {
                tracing::debug!(%peer, "closed an idle connection");
            }
            Ok(())
        }
        // A broken stream cannot be trusted further: close at once.
        Err(reason) => {
            drop(stop);
            Err(reason)
        }
    }
}

/// Why the writer stopped while the reader still ran.
fn writer_ended(written: Result<Result<(), String>, tokio::task::JoinError>) -> String {
    match written {
        Ok(Err(reason)) => reason,
        Ok(Ok(())) => "the writer stopped".to_owned(),
        Err(e) => format!("the writer failed: {e}"),
    }
}
