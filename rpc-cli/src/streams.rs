//! Stream calls from the command line: the items the server sends are
//! printed as JSON lines as they come; the items a method takes are read
//! from standard input, one JSON value per line, as they are typed.
//!
//! rpc-core's stream calls decode items through their type's own
//! `Deserialize`, with no seed; the formats the server described are thus
//! set once for the process (`rpc` makes one call) and read by the item
//! types below. serde-reflection's formats cannot cross threads, so the
//! process holds them as JSON, and each thread reads its own copy.

use std::cell::OnceCell;
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::sync::OnceLock;

use futures::StreamExt;
use rpc_core::{Channel, Streaming};
use serde::de::{DeserializeSeed, Deserializer};
use serde_json::Value;
use serde_reflection::{Format, Registry};

use crate::Failure;
use crate::values::{self, Way};

/// The formats of the call's streams and answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct Formats {
    registry: Registry,
    /// Of the items the client sends.
    sent: Option<Format>,
    /// `sent` and `registry` as the items are sent (see `wire`), made once.
    sent_wire: Option<Format>,
    wire_registry: Registry,
    /// Of the items the server sends, or of a client stream's one answer.
    read: Format,
    /// Of `E` in `Result<Streaming<T>, E>`.
    error: Option<Format>,
}

static FORMATS: OnceLock<Value> = OnceLock::new();

thread_local! {
    static PARSED: OnceCell<Rc<Formats>> = const { OnceCell::new() };
}

/// This thread's copy of the call's formats.
fn formats() -> Rc<Formats> {
    PARSED.with(|parsed| {
        parsed
            .get_or_init(|| {
                let json = FORMATS.get().expect("set before the call").clone();
                Rc::new(serde_json::from_value(json).expect("formats read back as written"))
            })
            .clone()
    })
}

/// A value the server sent, as JSON.
struct Read(Value);

impl<'de> serde::Deserialize<'de> for Read {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let formats = formats();
        read(deserializer, &formats.read, &formats.registry).map(Read)
    }
}

/// The error `E` of a `Result<Streaming<T>, E>`, as JSON.
struct Refused(Value);

impl<'de> serde::Deserialize<'de> for Refused {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let formats = formats();
        let format = formats.error.as_ref().unwrap_or(&Format::Unit);
        read(deserializer, format, &formats.registry).map(Refused)
    }
}

fn read<'de, D: Deserializer<'de>>(
    deserializer: D,
    format: &Format,
    registry: &Registry,
) -> Result<Value, D::Error> {
    let mut value = values::reply(format.clone(), registry).deserialize(deserializer)?;
    values::reshape(&mut value, format, registry, Way::Out);
    Ok(value)
}

/// An item read from standard input, checked, in the converter's shape.
struct Sent(Value);

impl serde::Serialize for Sent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let formats = formats();
        let format = formats.sent_wire.as_ref().unwrap_or(&Format::Unit);
        values::serialize_as(&self.0, format, &formats.wire_registry, serializer)
    }
}

// Only for rpc-core's bound (a stream can be passed on from the other
// side): `rpc` never receives a stream of what it sends.
impl<'de> serde::Deserialize<'de> for Sent {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "rpc does not read the items it sends",
        ))
    }
}

/// What a stream call needs beside the channel.
pub(crate) struct Call<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: &'a str,
    pub(crate) args: values::Encoded,
    pub(crate) registry: Registry,
    pub(crate) sent: Option<(String, Format)>,
    pub(crate) read: Format,
    pub(crate) reads_stream: bool,
    pub(crate) error: Option<Format>,
    pub(crate) pretty: bool,
}

/// Makes the call, printing what it returns; `None` when all is printed.
pub(crate) async fn call(channel: &Channel, call: Call<'_>) -> Result<Option<String>, Failure> {
    let (sent_name, sent_format) = call.sent.clone().unzip();
    let formats = Formats {
        sent_wire: sent_format
            .as_ref()
            .map(|f| crate::wire::format(f, &call.registry)),
        wire_registry: crate::wire::registry(&call.registry),
        registry: call.registry.clone(),
        sent: sent_format,
        read: call.read.clone(),
        error: call.error.clone(),
    };
    let shared = serde_json::to_value(&formats)
        .map_err(|e| Failure::Server(format!("the described formats do not convert: {e}")))?;
    let _ = FORMATS.set(shared);
    let (input, bad_line) = match sent_name {
        Some(name) => {
            let (input, bad_line) = stdin_items(name);
            (Some(input), Some(bad_line))
        }
        None => (None, None),
    };
    let work = async {
        if !call.reads_stream {
            let input = input.expect("a call that reads no stream sends one");
            let Read(answer) = channel
                .call_with_stream(call.service, call.method, call.args, input)
                .await?;
            return Ok(Some(json(&answer, call.pretty)));
        }
        let opened = channel
            .call_streaming_result::<_, Sent, Read, Refused>(
                call.service,
                call.method,
                call.args,
                input,
            )
            .await?;
        let mut items = match opened {
            Ok(items) => items,
            Err(Refused(error)) => {
                return Ok(Some(json(
                    &serde_json::json!({ "Err": error }),
                    call.pretty,
                )));
            }
        };
        let mut out = std::io::stdout().lock();
        while let Some(item) = items.next().await {
            let Read(item) = item?;
            // A reader that went away (`| head`) ends the call, as does
            // output that fails.
            writeln!(out, "{}", json(&item, call.pretty))
                .and_then(|()| out.flush())
                .map_err(Failure::Output)?;
        }
        Ok(None)
    };
    let Some(bad_line) = bad_line else {
        return work.await;
    };
    // A line that does not fit gives the call up, rather than ending the
    // stream as if it were complete.
    tokio::select! {
        result = work => result,
        Ok(message) = bad_line => Err(Failure::Usage(message)),
    }
}

fn json(value: &Value, pretty: bool) -> String {
    if pretty {
        serde_json::to_string_pretty(value).unwrap_or_default()
    } else {
        value.to_string()
    }
}

/// Standard input's lines as the stream argument `name`: each a JSON value
/// (or a string where it is not JSON); blank lines are skipped. A line
/// that does not fit the item format is sent on the second half instead,
/// and ends the stream.
fn stdin_items(name: String) -> (Streaming<Sent>, tokio::sync::oneshot::Receiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Sent>(16);
    let (bad_tx, bad_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let formats = formats();
        let format = formats.sent.as_ref().unwrap_or(&Format::Unit);
        for (number, line) in std::io::stdin().lock().lines().enumerate() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    let _ = bad_tx.send(format!("reading standard input: {e}"));
                    return;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let mut value = crate::wire::word(&line);
            if let Err(e) = values::check(&value, format, &formats.registry) {
                let _ = bad_tx.send(format!("`{name}`, line {}: {e}", number + 1));
                return;
            }
            values::reshape(&mut value, format, &formats.registry, Way::In);
            if tx.blocking_send(Sent(value)).is_err() {
                return; // the call is over
            }
        }
    });
    let items = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (Streaming::from_stream(items), bad_rx)
}
