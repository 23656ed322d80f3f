//! The example services, defined once and shared by the example binaries.

pub mod market;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use rpc_core::rpc_service;
use serde::{Deserialize, Serialize};

/// Why a division failed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum MathError {
    /// The divisor was zero.
    DivByZero,
}

/// A calculator on the other end of a socket.
#[rpc_service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides `a` by `b`, refusing to divide by zero.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Forgets the running total.
    async fn reset(&self);
    /// The sum of every `add` since the last reset.
    async fn total(&self) -> i64;
}

/// A [`Calculator`] that keeps a running total.
#[derive(Default)]
pub struct Calc {
    total: AtomicI64,
}

impl Calc {
    /// The running total, set back to zero.
    pub fn take_total(&self) -> i64 {
        self.total.swap(0, Ordering::Relaxed)
    }
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        let sum = a.wrapping_add(b);
        self.total.fetch_add(sum, Ordering::Relaxed);
        sum
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivByZero)
    }

    async fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
    }

    async fn total(&self) -> i64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// The object service of the XML-RPC benchmark the project started from.
#[rpc_service]
pub trait SeedObjects {
    /// Returns the object, the string `"lxx nb"`.
    async fn get_obj(&self) -> String;
    /// Receives an object.
    async fn send_obj(&self, data: String);
}

/// A [`SeedObjects`] that counts what it receives.
#[derive(Default)]
pub struct Seeds {
    received: AtomicUsize,
}

impl Seeds {
    /// How many objects `send_obj` has received.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }
}

impl SeedObjects for Seeds {
    async fn get_obj(&self) -> String {
        "lxx nb".to_owned()
    }

    async fn send_obj(&self, _data: String) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// The value of `--addr ADDR` (or `--addr=ADDR`) on the command line, or
/// `default`.
pub fn addr_arg(default: &str) -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = default.to_owned();
    while let Some(arg) = args.next() {
        if arg == "--addr" {
            addr = args
                .next()
                .ok_or("--addr needs a value, such as 127.0.0.1:7878")?;
        } else if let Some(value) = arg.strip_prefix("--addr=") {
            addr = value.to_owned();
        } else {
            return Err(format!(
                "unknown argument `{arg}`; usage: [--addr HOST:PORT]"
            ));
        }
    }
    Ok(addr)
}

/// Logs to stderr at INFO and above.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();
}
