//! Metrics through the `metrics` crate's facade (cargo feature `metrics`):
//! calls started, finished and in flight, their latency, open connections
//! and bytes each way, on each side. docs/OBSERVABILITY.md lists every
//! name and label.
//!
//! Without the feature every type here is empty and every function does
//! nothing, so the call path is as it was.

use crate::error::RpcError;
use crate::status::Code;
use crate::transport::{ReadHalf, WriteHalf};

/// Which end of a connection, the first word of each metric's name.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    Server,
    Client,
}

/// One call, counted as started and in flight until it ends. One that is
/// dropped without [`Call::ended`] (a client that gave the call up) ends
/// as CANCELLED.
pub(crate) struct Call {
    #[cfg(feature = "metrics")]
    on: Option<on::Call>,
}

impl Call {
    /// Counts a call as started on `side`, labelled with the service and
    /// method `labels` gives (asked only when metrics are on).
    #[inline]
    pub(crate) fn start<'a>(side: Side, labels: impl FnOnce() -> (&'a str, &'a str)) -> Call {
        #[cfg(feature = "metrics")]
        {
            let (service, method) = labels();
            Call {
                on: Some(on::Call::start(side, service, method)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (side, labels);
            Call {}
        }
    }

    /// Counts the call as finished with `code` (`None`: a failure that no
    /// status names, such as a closed connection).
    #[inline]
    pub(crate) fn ended(self, code: Option<Code>) {
        #[cfg(feature = "metrics")]
        {
            let mut this = self;
            if let Some(call) = this.on.take() {
                call.ended(code);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (self, code);
    }

    /// [`Call::ended`] with a client's result.
    #[inline]
    pub(crate) fn ended_with<T>(self, result: &Result<T, RpcError>) {
        self.ended(match result {
            Ok(_) => Some(Code::Ok),
            Err(e) => e.code(),
        });
    }
}

#[cfg(feature = "metrics")]
impl Drop for Call {
    fn drop(&mut self) {
        if let Some(call) = self.on.take() {
            call.ended(Some(Code::Cancelled));
        }
    }
}

/// An open connection, counted until dropped.
pub(crate) struct Connection {
    #[cfg(feature = "metrics")]
    gauge: metrics::Gauge,
}

impl Connection {
    /// Counts a connection as open on `side`.
    #[inline]
    pub(crate) fn open(side: Side) -> Connection {
        #[cfg(feature = "metrics")]
        {
            let gauge = match side {
                Side::Server => metrics::gauge!("rpc_server_connections_open"),
                Side::Client => metrics::gauge!("rpc_client_connections_open"),
            };
            gauge.increment(1.0);
            Connection { gauge }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = side;
            Connection {}
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for Connection {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// The halves of a connection, counting the bytes that cross them (TLS
/// records included: what the network carries).
#[inline]
pub(crate) fn bytes(read: ReadHalf, write: WriteHalf, side: Side) -> (ReadHalf, WriteHalf) {
    #[cfg(feature = "metrics")]
    return on::bytes(read, write, side);
    #[cfg(not(feature = "metrics"))]
    {
        let _ = side;
        (read, write)
    }
}

#[cfg(feature = "metrics")]
mod on {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use metrics::{Counter, counter, gauge, histogram};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::Side;
    use crate::status::Code;
    use crate::transport::{ReadHalf, WriteHalf};

    pub(super) struct Call {
        side: Side,
        service: String,
        method: String,
        started: Instant,
    }

    impl Call {
        pub(super) fn start(side: Side, service: &str, method: &str) -> Call {
            let labels = [
                ("service", service.to_owned()),
                ("method", method.to_owned()),
            ];
            match side {
                Side::Server => {
                    counter!("rpc_server_calls_started_total", &labels).increment(1);
                    gauge!("rpc_server_calls_in_flight", &labels).increment(1.0);
                }
                Side::Client => {
                    counter!("rpc_client_calls_started_total", &labels).increment(1);
                    gauge!("rpc_client_calls_in_flight", &labels).increment(1.0);
                }
            }
            Call {
                side,
                service: service.to_owned(),
                method: method.to_owned(),
                started: Instant::now(),
            }
        }

        pub(super) fn ended(self, code: Option<Code>) {
            let seconds = self.started.elapsed().as_secs_f64();
            let status = code.map_or_else(|| "UNKNOWN".to_owned(), |code| code.to_string());
            let Call {
                side,
                service,
                method,
                ..
            } = self;
            let labels = [("service", service), ("method", method)];
            let ended = [labels[0].clone(), labels[1].clone(), ("status", status)];
            match side {
                Side::Server => {
                    gauge!("rpc_server_calls_in_flight", &labels).decrement(1.0);
                    counter!("rpc_server_calls_finished_total", &ended).increment(1);
                    histogram!("rpc_server_call_duration_seconds", &ended).record(seconds);
                }
                Side::Client => {
                    gauge!("rpc_client_calls_in_flight", &labels).decrement(1.0);
                    counter!("rpc_client_calls_finished_total", &ended).increment(1);
                    histogram!("rpc_client_call_duration_seconds", &ended).record(seconds);
                }
            }
        }
    }

    pub(super) fn bytes(read: ReadHalf, write: WriteHalf, side: Side) -> (ReadHalf, WriteHalf) {
        let (received, sent) = match side {
            Side::Server => (
                counter!("rpc_server_bytes_received_total"),
                counter!("rpc_server_bytes_sent_total"),
            ),
            Side::Client => (
                counter!("rpc_client_bytes_received_total"),
                counter!("rpc_client_bytes_sent_total"),
            ),
        };
        (
            Box::new(Counted {
                io: read,
                counter: received,
            }),
            Box::new(Counted {
                io: write,
                counter: sent,
            }),
        )
    }

    /// A half of a connection that counts the bytes through it.
    struct Counted<T> {
        io: T,
        counter: Counter,
    }

    impl AsyncRead for Counted<ReadHalf> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.io).poll_read(cx, buf);
            let read = buf.filled().len() - before;
            if read > 0 {
                self.counter.increment(read as u64);
            }
            polled
        }
    }

    impl AsyncWrite for Counted<WriteHalf> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.io).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = polled {
                self.counter.increment(n as u64);
            }
            polled
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
            if let Poll::Ready(Ok(n)) = polled {
                self.counter.increment(n as u64);
            }
            polled
        }

        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }
}
