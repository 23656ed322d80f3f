//! What a service says of itself: its methods, their arguments and return
//! types as written and as serde's data model describes them
//! (serde-reflection formats). Generated servers describe themselves; the
//! server's introspection service (docs/PROTOCOL.md, "Introspection")
//! sends it as JSON.

use serde_reflection::{Format, Samples, Tracer, TracerConfig};

pub use crate::schema::{MAX_SCHEMA_TEXT, MethodSchema};

/// A service's description, as [`Service::description`](crate::Service::description)
/// gives it.
#[derive(Debug, Clone)]
pub struct Description {
    /// The service's doc comment.
    pub doc: &'static str,
    /// Its methods, in the trait's order.
    pub methods: Vec<MethodDescription>,
}

/// One method.
#[derive(Debug, Clone)]
pub struct MethodDescription {
    /// Its name on the wire.
    pub name: &'static str,
    /// Its doc comment.
    pub doc: &'static str,
    /// Its arguments besides a stream: names and types as written.
    pub args: Vec<(&'static str, &'static str)>,
    /// The stream argument's name, item type as written, and place among
    /// all the arguments (0 for the first), if it takes one.
    pub stream_arg: Option<(&'static str, &'static str, usize)>,
    /// What the caller receives, as written (`T` of a `Result<T, Rejection>`).
    pub returns: &'static str,
    /// Whether it returns a stream (`Streaming<T>` or `Result<Streaming<T>, E>`).
    pub returns_stream: bool,
    /// Traces the formats of its argument, stream item and return types.
    pub trace: fn(&mut Tracer, &Samples) -> serde_reflection::Result<MethodFormats>,
}

/// The serde formats of one method's types, as traced.
#[derive(Debug, Clone)]
pub struct MethodFormats {
    /// Of each argument besides a stream, in order.
    pub args: Vec<Format>,
    /// Of the stream argument's items.
    pub stream_arg: Option<Format>,
    /// Of the value the caller receives, or of the items of the stream it
    /// reads (the stream's own `Result<Streaming<T>, E>` error: see
    /// `returns_error`).
    pub returns: Format,
    /// For `Result<Streaming<T>, E>`: the format of `E`.
    pub returns_error: Option<Format>,
}

impl MethodDescription {
    /// The stream shape: `unary`, `server`, `client` or `bidi`.
    pub fn shape(&self) -> &'static str {
        match (self.stream_arg.is_some(), self.returns_stream) {
            (false, false) => "unary",
            (false, true) => "server",
            (true, false) => "client",
            (true, true) => "bidi",
        }
    }
}

/// One method's formats; a type whose `Deserialize` panics on the
/// tracer's made-up values makes the method opaque, like one that refuses
/// them.
fn traced(
    method: &MethodDescription,
    tracer: &mut Tracer,
    samples: &Samples,
) -> serde_reflection::Result<MethodFormats> {
    let traced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (method.trace)(tracer, samples)
    }));
    traced.unwrap_or_else(|panic| {
        Err(serde_reflection::Error::Custom(format!(
            "a type's Deserialize panicked: {}",
            crate::panic::message(&*panic)
        )))
    })
}

/// Passes over a service's types before they are described as opaque.
const MAX_PASSES: usize = 256;

/// Traces every method's formats, and the registry of the named types they
/// use. serde-reflection finds the variants of an enum nested in another
/// type one pass at a time, and only while the enum's "incomplete" mark is
/// cleared between passes, by name; the names come from the registry's
/// error. So: pass until no known enum is incomplete, and if the registry
/// names more, start again knowing them.
pub(crate) fn trace(
    description: &Description,
) -> (
    Vec<serde_reflection::Result<MethodFormats>>,
    serde_reflection::Result<serde_reflection::Registry>,
) {
    let samples = Samples::new();
    let mut enums = std::collections::BTreeSet::<String>::new();
    let mut passes = 0;
    loop {
        let mut tracer = Tracer::new(TracerConfig::default());
        let formats = loop {
            passes += 1;
            let formats: Vec<_> = description
                .methods
                .iter()
                .map(|method| traced(method, &mut tracer, &samples))
                .collect();
            let mut more = false;
            for name in &enums {
                more |= tracer.check_incomplete_enum(name.as_str()).is_some();
            }
            if !more || passes >= MAX_PASSES {
                break formats;
            }
        };
        let unfinished = match tracer.registry() {
            Err(serde_reflection::Error::MissingVariants(names)) => names,
            // An enum met only inside a top-level one can be left with the
            // provisional index its variant had before its real one was
            // found, with no error: as unfinished.
            Ok(registry) => {
                let provisional: Vec<String> = registry
                    .iter()
                    .filter(|(_, format)| matches!(format, serde_reflection::ContainerFormat::Enum(variants) if variants.keys().any(|&index| index > u32::MAX / 2)))
                    .map(|(name, _)| name.clone())
                    .collect();
                if provisional.is_empty() {
                    return (formats, Ok(registry));
                }
                if passes >= MAX_PASSES || provisional.iter().all(|n| enums.contains(n)) {
                    return (
                        formats,
                        Err(serde_reflection::Error::MissingVariants(provisional)),
                    );
                }
                provisional
            }
            Err(e) => return (formats, Err(e)),
        };
        if passes >= MAX_PASSES || unfinished.iter().all(|n| enums.contains(n)) {
            return (
                formats,
                Err(serde_reflection::Error::MissingVariants(unfinished)),
            );
        }
        enums.extend(unfinished);
    }
}
