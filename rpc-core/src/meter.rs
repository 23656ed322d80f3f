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
    use std::collections::HashMap;
    use std::io;
    use std::pin::Pin;
    use std::sync::{Arc, LazyLock, OnceLock};
    use std::task::{Context, Poll};
    use std::time::Instant;

    use arc_swap::ArcSwap;
    use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::Side;
    use crate::status::Code;
    use crate::transport::{ReadHalf, WriteHalf};

    /// The handles of one method's metrics on one side, registered once:
    /// building a key and finding it in the recorder for each of five
    /// metrics, twice a call, halved W2 and cut W3 to a quarter with a
    /// Prometheus recorder.
    struct Method {
        service: String,
        method: String,
        side: Side,
        started: Counter,
        in_flight: Gauge,
        /// By status: the wire codes 0 to 10, then `UNKNOWN`.
        finished: [OnceLock<(Counter, Histogram)>; STATUSES],
    }

    const STATUSES: usize = 12;

    /// Methods seen so far, per side, by service and method name. Read
    /// without a lock; a name is added once.
    type Methods = HashMap<Box<str>, HashMap<Box<str>, Arc<Method>>>;
    static SERVER: LazyLock<ArcSwap<Methods>> = LazyLock::new(ArcSwap::default);
    static CLIENT: LazyLock<ArcSwap<Methods>> = LazyLock::new(ArcSwap::default);

    /// Names beyond this many per side are not cached (a client calling
    /// made-up names through `Channel::call`): they are counted all the
    /// same, at the uncached price.
    const MAX_CACHED: usize = 4096;

    impl Method {
        fn new(side: Side, service: &str, method: &str) -> Method {
            let labels = [
                ("service", service.to_owned()),
                ("method", method.to_owned()),
            ];
            let (started, in_flight) = match side {
                Side::Server => (
                    counter!("rpc_server_calls_started_total", &labels),
                    gauge!("rpc_server_calls_in_flight", &labels),
                ),
                Side::Client => (
                    counter!("rpc_client_calls_started_total", &labels),
                    gauge!("rpc_client_calls_in_flight", &labels),
                ),
            };
            Method {
                service: service.to_owned(),
                method: method.to_owned(),
                side,
                started,
                in_flight,
                finished: Default::default(),
            }
        }

        /// The method's handles, registered on its first call.
        fn of(side: Side, service: &str, method: &str) -> Arc<Method> {
            let cache = match side {
                Side::Server => &*SERVER,
                Side::Client => &*CLIENT,
            };
            if let Some(found) = cache.load().get(service).and_then(|m| m.get(method)) {
                return found.clone();
            }
            let made = Arc::new(Method::new(side, service, method));
            cache.rcu(|methods| {
                let mut methods = Methods::clone(methods);
                let cached: usize = methods.values().map(HashMap::len).sum();
                if cached < MAX_CACHED {
                    methods
                        .entry(service.into())
                        .or_default()
                        .entry(method.into())
                        .or_insert_with(|| made.clone());
                }
                methods
            });
            made
        }

        fn finished(&self, code: Option<Code>) -> &(Counter, Histogram) {
            let index = code.map_or(STATUSES - 1, |code| {
                usize::from(code.wire()).min(STATUSES - 2)
            });
            self.finished[index].get_or_init(|| {
                let status = code.map_or_else(|| "UNKNOWN".to_owned(), |code| code.to_string());
                let labels = [
                    ("service", self.service.clone()),
                    ("method", self.method.clone()),
                    ("status", status),
                ];
                match self.side {
                    Side::Server => (
                        counter!("rpc_server_calls_finished_total", &labels),
                        histogram!("rpc_server_call_duration_seconds", &labels),
                    ),
                    Side::Client => (
                        counter!("rpc_client_calls_finished_total", &labels),
                        histogram!("rpc_client_call_duration_seconds", &labels),
                    ),
                }
            })
        }
    }

    pub(super) struct Call {
        method: Arc<Method>,
        started: Instant,
    }

    impl Call {
        pub(super) fn start(side: Side, service: &str, method: &str) -> Call {
            let method = Method::of(side, service, method);
            method.started.increment(1);
            method.in_flight.increment(1.0);
            Call {
                method,
                started: Instant::now(),
            }
        }

        pub(super) fn ended(self, code: Option<Code>) {
            let seconds = self.started.elapsed().as_secs_f64();
            self.method.in_flight.decrement(1.0);
            let (finished, duration) = self.method.finished(code);
            finished.increment(1);
            duration.record(seconds);
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
