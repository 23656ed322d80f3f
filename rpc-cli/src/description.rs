//! A service's description, as the server's introspection sends it
//! (docs/PROTOCOL.md §9), read into what a call needs.

use serde::Deserialize;
use serde_reflection::{Format, Registry};

/// The service, as `describe` answered.
#[derive(Debug, Deserialize)]
pub(crate) struct Service {
    pub(crate) service: String,
    #[serde(default)]
    pub(crate) doc: String,
    pub(crate) methods: Vec<Method>,
    /// The registry, or `{"opaque": ...}`.
    pub(crate) types: serde_json::Value,
    #[serde(default)]
    pub(crate) opaque: Option<String>,
}

/// One method.
#[derive(Debug, Deserialize)]
pub(crate) struct Method {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) doc: String,
    pub(crate) shape: String,
    pub(crate) args: Vec<Typed>,
    /// The stream argument, for a method that takes one.
    #[serde(default)]
    pub(crate) stream_arg: Option<Typed>,
    pub(crate) returns: Typed,
    /// For `Result<Streaming<T>, E>`: `E`.
    #[serde(default)]
    pub(crate) returns_error: Option<Untyped>,
    #[serde(default)]
    pub(crate) opaque: Option<String>,
    /// Its schema's canonical text, for a unary method whose types trace
    /// (docs/PROTOCOL.md §12).
    #[serde(default)]
    pub(crate) schema: Option<String>,
}

/// A value's name (for arguments), type as written, and format.
#[derive(Debug, Deserialize)]
pub(crate) struct Typed {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) ty: String,
    pub(crate) format: Option<Format>,
    /// A stream argument's place among all the arguments.
    #[serde(default)]
    pub(crate) position: usize,
}

/// A format alone.
#[derive(Debug, Deserialize)]
pub(crate) struct Untyped {
    pub(crate) format: Option<Format>,
}

impl Service {
    /// The named types, if they could be traced.
    pub(crate) fn registry(&self) -> Result<Registry, String> {
        if let Some(reason) = self.types.get("opaque") {
            return Err(format!("the server could not describe its types: {reason}"));
        }
        serde_json::from_value(self.types.clone())
            .map_err(|e| format!("the server's type description does not parse: {e}"))
    }
}
