//! Types that evolve (docs/EVOLUTION.md): each unary method's argument and
//! return types, traced with serde-reflection, written out as one
//! canonical text and hashed into a fingerprint. A client claims its
//! schema in a request extension until the server's reply says whether
//! the server's is the same (docs/PROTOCOL.md §12); where they differ each
//! side reads the other's bytes with the other's schema, by name
//! ([`resolve`]), and where they agree nothing changes: bincode's bytes,
//! read by the reader's own type.

mod resolve;
mod shape;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::{BufMut, Bytes};
use serde::Deserialize;
use serde::de::DeserializeSeed;

use crate::codec;
use crate::describe::{self, Description};
use crate::error::CodecError;
use shape::{Shape, Types};

pub(crate) use shape::Schema;

/// Extension tag of a schema claim, in requests and replies.
pub(crate) const TAG_SCHEMA: u16 = 0x0003;

/// The fingerprint that says "no schema": a server's, for a method it
/// cannot describe (streams, types that do not trace, hand-written
/// services). A client that reads it keeps to the plain path.
pub(crate) const UNKNOWN: u64 = 0;

/// Requests sent with a schema claim, and bodies read with another
/// side's schema, in this process: what tests read to prove that calls
/// whose schemas agree take the plain path.
static CLAIMS_SENT: AtomicU64 = AtomicU64::new(0);
static RESOLVED: AtomicU64 = AtomicU64::new(0);

/// Counts of [`CLAIMS_SENT`] and [`RESOLVED`].
pub(crate) fn counts() -> (u64, u64) {
    (
        CLAIMS_SENT.load(Ordering::Relaxed),
        RESOLVED.load(Ordering::Relaxed),
    )
}

/// Bytes of an extension entry's tag and length.
const ENTRY_HEADER_LEN: usize = 2 + 4;

/// Writer schemas a server keeps parsed, across its connections; more are
/// parsed for each call that claims them. Enough for every method of a
/// large service under several client versions (a client whose schema
/// differs claims it on every call: with fewer kept than it has, each of
/// its calls would cost a parse, and its connection's read budget).
const MAX_PEER_SCHEMAS: usize = 1024;

/// Bytes of schema text those may hold together (their parsed forms take
/// about five times as much).
const MAX_PEER_BYTES: usize = 1 << 20;

/// The longest schema text that is claimed or read (docs/PROTOCOL.md
/// §12): a method whose canonical text is longer has no schema, and a
/// longer claim is refused. One method's types fit in far less; reading a
/// text costs time on the connection's reader, so a peer may not send
/// megabytes of it.
pub const MAX_SCHEMA_TEXT: usize = 64 * 1024;

/// The fingerprint of a canonical text: 64-bit FNV-1a of its UTF-8 bytes,
/// 1 where that is 0 (which means "none").
pub(crate) fn fingerprint(text: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in text {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if hash == UNKNOWN { 1 } else { hash }
}

/// One side's schema of one unary method (docs/PROTOCOL.md §12): what a
/// generated client claims for its types, or what a caller that encodes
/// values from a server's description claims for them (the `rpc` command
/// line, through [`Channel::call_seeded`](crate::Channel::call_seeded)).
///
/// ```
/// use rpc_core::describe::MethodSchema;
///
/// let schema = MethodSchema::parse(r#"{"args":["I64","I64"],"returns":"I64","types":{}}"#)?;
/// assert_eq!(schema.fingerprint(), 0xe9db_7027_c0b4_84b7);
/// # Ok::<(), rpc_core::CodecError>(())
/// ```
#[derive(Debug)]
pub struct MethodSchema {
    pub(crate) fingerprint: u64,
    pub(crate) text: Box<str>,
    pub(crate) schema: Schema,
    /// Whether it lives as long as the process (a generated client's,
    /// traced once into a `static`): only then may a connection remember
    /// by its address that the server agreed to it. Others are claimed on
    /// every call.
    pub(crate) lasting: bool,
    /// The extension entry that claims it in full.
    claim: Box<[u8]>,
    /// The one that claims its fingerprint alone.
    short_claim: Box<[u8]>,
}

impl MethodSchema {
    /// The schema whose text is `text`: JSON of the form PROTOCOL.md §12
    /// gives (the canonical text, or any other spelling of it: the
    /// fingerprint is of the text as given).
    ///
    /// # Errors
    ///
    /// Text that is not such JSON, is longer than [`MAX_SCHEMA_TEXT`],
    /// names a type it does not describe, or has a newtype that wraps
    /// itself.
    pub fn parse(text: &str) -> Result<MethodSchema, CodecError> {
        let schema = Schema::parse(text).map_err(CodecError::new)?;
        Ok(Self::with(text.to_owned(), schema, false))
    }

    /// Its fingerprint: 64-bit FNV-1a of its text (PROTOCOL.md §12).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn with(text: String, schema: Schema, lasting: bool) -> MethodSchema {
        let fingerprint = fingerprint(text.as_bytes());
        MethodSchema {
            fingerprint,
            claim: entry(fingerprint, text.as_bytes()),
            short_claim: entry(fingerprint, &[]),
            text: text.into(),
            schema,
            lasting,
        }
    }

    /// Its fingerprint as PROTOCOL.md writes it: 16 lower-case hex digits.
    pub(crate) fn hex(&self) -> String {
        format!("{:016x}", self.fingerprint)
    }

    /// Its canonical text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The extension entry a request claims it with, counted as sent.
    pub(crate) fn claim(&self) -> &[u8] {
        CLAIMS_SENT.fetch_add(1, Ordering::Relaxed);
        &self.claim
    }
}

/// A schema extension entry: tag, length, fingerprint, text.
fn entry(fingerprint: u64, text: &[u8]) -> Box<[u8]> {
    let mut entry = Vec::with_capacity(ENTRY_HEADER_LEN + 8 + text.len());
    entry.put_u16_le(TAG_SCHEMA);
    entry.put_u32_le(u32::try_from(8 + text.len()).unwrap_or(u32::MAX));
    entry.put_u64_le(fingerprint);
    entry.put_slice(text);
    entry.into()
}

/// The entry a server answers with for a method it has no schema of.
pub(crate) fn unknown_claim() -> &'static [u8] {
    static UNKNOWN_CLAIM: OnceLock<Box<[u8]>> = OnceLock::new();
    UNKNOWN_CLAIM.get_or_init(|| entry(UNKNOWN, &[]))
}

/// What a peer's schema extension said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim<'a> {
    pub(crate) fingerprint: u64,
    /// Its canonical text; empty when only the fingerprint came.
    pub(crate) text: &'a [u8],
}

impl<'a> Claim<'a> {
    /// Reads an entry's value: a fingerprint (8 bytes, little-endian),
    /// then the text.
    pub(crate) fn read(value: &'a [u8]) -> Option<Claim<'a>> {
        let (fingerprint, text) = value.split_first_chunk::<8>()?;
        Some(Claim {
            fingerprint: u64::from_le_bytes(*fingerprint),
            text,
        })
    }
}

/// Each method's wire name and schema, if it has one.
pub(crate) type Methods = Vec<(&'static str, Option<Arc<MethodSchema>>)>;

/// The schemas of each unary method of a described service, by wire
/// name; `None` for a method without one (it streams, or its types could
/// not be traced).
///
/// `lasting`: whether the schemas live as long as the process (a
/// generated client's, kept in its `static`), so that a connection may
/// remember them by address.
pub(crate) fn of(description: &Description, lasting: bool) -> Methods {
    let (traced, registry) = describe::trace(description);
    description
        .methods
        .iter()
        .zip(traced)
        .map(|(method, formats)| {
            let schema = match (&registry, formats) {
                (Ok(registry), Ok(formats))
                    if method.stream_arg.is_none() && !method.returns_stream =>
                {
                    shape::canonical(&formats.args, &formats.returns, registry)
                        .filter(|text| text.len() <= MAX_SCHEMA_TEXT)
                        .and_then(|text| {
                            // Read back from the text, so that it means
                            // exactly what a peer that reads the text takes
                            // (the method's own types, not the service's).
                            let schema = Schema::parse(&text).ok()?;
                            Some(Arc::new(MethodSchema::with(text, schema, lasting)))
                        })
                }
                _ => None,
            };
            (method.name, schema)
        })
        .collect()
}

/// The schemas of a generated client's service, traced on its first call.
/// The macro makes one `static` per service.
pub struct Local {
    describe: fn() -> Description,
    methods: OnceLock<Methods>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

impl Local {
    /// The schemas of the service `describe` describes.
    pub const fn new(describe: fn() -> Description) -> Self {
        Local {
            describe,
            methods: OnceLock::new(),
        }
    }

    /// The schema of the method with this wire name, if it has one.
    pub(crate) fn method(&self, name: &str) -> Option<&MethodSchema> {
        let methods = self.methods.get_or_init(|| of(&(self.describe)(), true));
        methods
            .iter()
            .find(|(method, _)| *method == name)
            .and_then(|(_, schema)| schema.as_deref())
    }
}

/// A body, and the schema its writer wrote it with where that is not the
/// reader's own.
pub(crate) enum Body<'a> {
    /// Written with the reader's schema (or by a peer that claimed none).
    Own(&'a [u8]),
    /// Written with another: `shape` and its named types.
    Other {
        bytes: &'a [u8],
        shape: &'a Shape,
        types: &'a Types,
        /// Whether it holds a call's arguments, named by place in errors.
        args: bool,
    },
}

/// Why a body did not decode.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Its bytes are not a value of the writer's schema.
    Codec(CodecError),
    /// They are, but the reader's type cannot take it: what and where.
    Mismatch(String),
}

impl<'a> Body<'a> {
    /// The body of a call's arguments, read with `writer` if set.
    pub(crate) fn args(bytes: &'a [u8], writer: Option<&'a Schema>) -> Self {
        match writer {
            Some(writer) => Body::Other {
                bytes,
                shape: &writer.args,
                types: &writer.types,
                args: true,
            },
            None => Body::Own(bytes),
        }
    }

    /// The body of a reply, read with `writer` if set.
    pub(crate) fn reply(bytes: &'a [u8], writer: Option<&'a Schema>) -> Self {
        match writer {
            Some(writer) => Body::Other {
                bytes,
                shape: &writer.returns,
                types: &writer.types,
                args: false,
            },
            None => Body::Own(bytes),
        }
    }

    /// Decodes it as `T`.
    pub(crate) fn decode<T: Deserialize<'a>>(self) -> Result<T, Failure> {
        match self {
            Body::Own(bytes) => codec::decode(bytes).map_err(Failure::Codec),
            other => other.decode_with(std::marker::PhantomData::<T>),
        }
    }

    /// Decodes it with `seed`.
    pub(crate) fn decode_with<S: DeserializeSeed<'a>>(self, seed: S) -> Result<S::Value, Failure> {
        match self {
            Body::Own(bytes) => codec::decode_with(seed, bytes).map_err(Failure::Codec),
            Body::Other {
                bytes,
                shape,
                types,
                args,
            } => {
                RESOLVED.fetch_add(1, Ordering::Relaxed);
                let ctx = resolve::Ctx::new(types, bytes.len(), args);
                let bridge = resolve::Bridge {
                    seed,
                    shape,
                    ctx: &ctx,
                };
                codec::decode_with(bridge, bytes).map_err(|e| match ctx.mismatch() {
                    Some(mismatch) => {
                        Failure::Mismatch(mismatch.explained(&e.to_string()).to_string())
                    }
                    None => Failure::Codec(e),
                })
            }
        }
    }
}

/// A server's schemas: each service's, traced when a client first claims
/// one of its methods, and the writer schemas clients claimed.
pub(crate) struct Served {
    services: HashMap<&'static str, ServedService>,
    peers: Mutex<Peers>,
}

/// The client schemas a server keeps parsed, by text, and their texts'
/// bytes together.
#[derive(Default)]
struct Peers {
    known: HashMap<Box<[u8]>, Arc<Schema>>,
    bytes: usize,
}

struct ServedService {
    service: Arc<dyn crate::Service>,
    methods: OnceLock<Methods>,
}

/// Why a server refused a call's claim.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The schemas do not agree, or the client's cannot be read: the
    /// message of a SCHEMA_MISMATCH answer.
    Mismatch(String),
    /// The connection has sent more schemas the server had not read than
    /// it reads for one connection (see `Served::peer`).
    Busy,
}

/// What a server read of one call's claim: its own schema of the method,
/// and the client's where the two differ.
#[derive(Debug)]
pub(crate) struct Agreement {
    own: Option<Arc<MethodSchema>>,
    writer: Option<Arc<Schema>>,
    /// Whether the client's fingerprint is another: then the reply carries
    /// the server's text, even where the client's text means the same.
    differs: bool,
}

impl Agreement {
    /// The schema the arguments were written with, if not the server's.
    pub(crate) fn writer(&self) -> Option<&Schema> {
        self.writer.as_deref()
    }

    /// The extension entry the reply carries: the server's fingerprint,
    /// with its text where the client's differs (the client reads the
    /// reply with it).
    pub(crate) fn reply_claim(&self) -> &[u8] {
        match &self.own {
            None => unknown_claim(),
            Some(own) if self.differs => &own.claim,
            Some(own) => &own.short_claim,
        }
    }
}

impl Served {
    pub(crate) fn new(
        services: impl IntoIterator<Item = (&'static str, Arc<dyn crate::Service>)>,
    ) -> Self {
        Served {
            services: services
                .into_iter()
                .map(|(name, service)| {
                    let methods = OnceLock::new();
                    (name, ServedService { service, methods })
                })
                .collect(),
            peers: Mutex::new(Peers::default()),
        }
    }

    /// What a call to `service`.`method` that claimed `claim` is read
    /// with; the error is the message of a SCHEMA_MISMATCH answer.
    pub(crate) fn agree(
        &self,
        service: &str,
        method: &str,
        claim: Claim<'_>,
        may_read: impl FnOnce(usize) -> bool,
    ) -> Result<Agreement, Refused> {
        let own = self.services.get(service).and_then(|served| {
            let methods = served
                .methods
                .get_or_init(|| match served.service.description() {
                    Some(description) => of(&description, false),
                    None => Vec::new(),
                });
            methods
                .iter()
                .find(|(name, _)| *name == method)
                .and_then(|(_, schema)| schema.clone())
        });
        let Some(own) = own else {
            return Ok(Agreement {
                own: None,
                writer: None,
                differs: false,
            });
        };
        if claim.fingerprint == own.fingerprint || claim.fingerprint == UNKNOWN {
            return Ok(Agreement {
                own: Some(own),
                writer: None,
                differs: false,
            });
        }
        if claim.text.is_empty() {
            return Err(Refused::Mismatch(format!(
                "the client's types for {service}.{method} differ from the server's \
                 (fingerprint {:016x}, the server's {}) and it sent no schema to resolve them by",
                claim.fingerprint,
                own.hex()
            )));
        }
        let writer = self.peer(claim.text, may_read)?;
        // Another text of the same schema (spacing, key order) is read as
        // the server's own; the reply still carries the server's text,
        // since the client cannot know the two agree.
        let writer = (*writer != own.schema).then_some(writer);
        Ok(Agreement {
            own: Some(own),
            writer,
            differs: true,
        })
    }

    /// A client's schema, parsed once and kept while there is room: when
    /// there is none, others make way (a peer that claims one schema after
    /// another costs each call a parse, and no more memory). A text not
    /// kept is read only if `may_read` its length: reading one costs up to
    /// a hundred times what a plain request of its size does.
    fn peer(
        &self,
        text: &[u8],
        may_read: impl FnOnce(usize) -> bool,
    ) -> Result<Arc<Schema>, Refused> {
        if text.len() > MAX_SCHEMA_TEXT {
            return Err(Refused::Mismatch(format!(
                "the client's schema is {} bytes, over the limit of {MAX_SCHEMA_TEXT}",
                text.len()
            )));
        }
        if let Some(known) = lock(&self.peers).known.get(text) {
            return Ok(known.clone());
        }
        if !may_read(text.len()) {
            return Err(Refused::Busy);
        }
        let parsed = std::str::from_utf8(text)
            .map_err(|_| "the client's schema is not UTF-8".to_owned())
            .and_then(Schema::parse)
            .map_err(|e| {
                Refused::Mismatch(format!("the client's schema could not be read: {e}"))
            })?;
        let parsed = Arc::new(parsed);
        let mut peers = lock(&self.peers);
        while peers.known.len() >= MAX_PEER_SCHEMAS || peers.bytes + text.len() > MAX_PEER_BYTES {
            let Some(evicted) = peers.known.keys().next().cloned() else {
                break;
            };
            peers.known.remove(&evicted);
            peers.bytes -= evicted.len();
        }
        if peers.known.insert(text.into(), parsed.clone()).is_none() {
            peers.bytes += text.len();
        }
        Ok(parsed)
    }
}

/// What a client connection learned of the server's schema of each method
/// it called with one: the same as its own, or the server's (which its
/// replies are read with).
///
/// "The same" is what every call asks, so it is one relaxed load: a slot
/// per method, by a hash of the identity of the client's schema, holding
/// that identity once the server agreed. Two methods that share a slot
/// take turns in it and claim again when pushed out; that costs bytes, not
/// correctness. A `RwLock` read per call cost W3 a tenth of its rate (two
/// cores contending for the lock's count).
pub(crate) struct Agreements {
    same: [AtomicUsize; SLOTS],
    differs: RwLock<HashMap<usize, Arc<MethodSchema>>>,
}

/// Slots of [`Agreements::same`].
const SLOTS: usize = 64;

impl Default for Agreements {
    fn default() -> Self {
        Agreements {
            same: std::array::from_fn(|_| AtomicUsize::new(0)),
            differs: RwLock::default(),
        }
    }
}

impl Agreements {
    fn key(own: &MethodSchema) -> usize {
        std::ptr::from_ref(own) as usize
    }

    fn slot(&self, key: usize) -> &AtomicUsize {
        let hash = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
        &self.same[hash as usize % SLOTS]
    }

    /// Whether the server said its schema of `own`'s method is the same
    /// (or that it has none): then requests need not claim it.
    pub(crate) fn same(&self, own: &MethodSchema) -> bool {
        let key = Self::key(own);
        own.lasting && self.slot(key).load(Ordering::Relaxed) == key
    }

    /// Takes in the claim a reply to a call of `own`'s method carried
    /// (`None`: the server claims nothing, as servers before schemas did),
    /// and returns the schema the reply is written with where it is not
    /// `own`.
    pub(crate) fn learn(
        &self,
        own: &MethodSchema,
        claim: Option<(u64, Bytes)>,
    ) -> Result<Option<Arc<MethodSchema>>, String> {
        let key = Self::key(own);
        let (fingerprint, text) = match claim {
            Some((fingerprint, text))
                if fingerprint != own.fingerprint && fingerprint != UNKNOWN =>
            {
                (fingerprint, text)
            }
            _ => {
                let slot = self.slot(key);
                if own.lasting && slot.load(Ordering::Relaxed) != key {
                    slot.store(key, Ordering::Relaxed);
                }
                return Ok(None);
            }
        };
        if let Some(known) = read(&self.differs).get(&key).cloned()
            && own.lasting
            && known.fingerprint == fingerprint
            && known.text.as_bytes() == text.as_ref()
        {
            return Ok(Some(known));
        }
        if text.len() > MAX_SCHEMA_TEXT {
            return Err(format!(
                "the server's schema is {} bytes, over the limit of {MAX_SCHEMA_TEXT}",
                text.len()
            ));
        }
        if text.is_empty() {
            return Err(format!(
                "the server's types differ (fingerprint {fingerprint:016x}, this client's {}) \
                 and its reply carries no schema to resolve them by",
                own.hex()
            ));
        }
        let text = std::str::from_utf8(&text)
            .map_err(|_| "the server's schema is not UTF-8".to_owned())?;
        let theirs = Arc::new(
            MethodSchema::parse(text)
                .map_err(|e| format!("the server's schema could not be read: {e}"))?,
        );
        if own.lasting {
            write(&self.differs).insert(key, theirs.clone());
        }
        Ok(Some(theirs))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_reflection::{Format, Registry};

    /// docs/PROTOCOL.md §12's example, byte for byte.
    #[test]
    fn the_protocol_example_has_the_documented_text_and_fingerprint() {
        let text =
            shape::canonical(&[Format::I64, Format::I64], &Format::I64, &Registry::new()).unwrap();
        assert_eq!(text, r#"{"args":["I64","I64"],"returns":"I64","types":{}}"#);
        assert_eq!(
            format!("{:016x}", fingerprint(text.as_bytes())),
            "e9db7027c0b484b7"
        );
    }

    #[test]
    fn claims_read_back_and_short_ones_are_refused() {
        let claim = entry(42, b"{}");
        assert_eq!(&claim[..2], &TAG_SCHEMA.to_le_bytes());
        let read = Claim::read(&claim[6..]).unwrap();
        assert_eq!((read.fingerprint, read.text), (42, &b"{}"[..]));
        assert_eq!(Claim::read(&[1, 2, 3]), None);
    }

    #[test]
    fn a_hostile_schema_is_an_error_not_a_panic() {
        for text in [
            "",
            "{",
            r#"{"args":[],"returns":"NOPE","types":{}}"#,
            r#"{"args":[{"TYPENAME":"Missing"}],"returns":"UNIT","types":{}}"#,
        ] {
            let parsed = MethodSchema::parse(text);
            if let Ok(schema) = parsed {
                // A type named but not described parses, and fails the
                // value that needs it.
                let body = Body::args(&[0], Some(&schema.schema));
                assert!(body.decode::<(u8,)>().is_err(), "{text}");
            }
        }
        // A deep or huge claim fails the value, bounded.
        let deep = format!(
            r#"{{"args":[{}"U8"{}],"returns":"UNIT","types":{{}}}}"#,
            r#"{"OPTION":"#.repeat(100),
            "}".repeat(100)
        );
        let schema = MethodSchema::parse(&deep).unwrap();
        let mut body = vec![1u8; 100];
        body.push(7);
        let read = Body::args(&body, Some(&schema.schema)).decode::<(u8,)>();
        assert!(read.is_err());
        // Newtypes that wrap each other, or a type not described: refused
        // as the schema is read.
        let circle = r#"{"args":[{"TYPENAME":"A"}],"returns":"UNIT","types":{"A":{"NEWTYPESTRUCT":{"TYPENAME":"B"}},"B":{"NEWTYPESTRUCT":{"TYPENAME":"A"}}}}"#;
        let error = MethodSchema::parse(circle).unwrap_err().to_string();
        assert!(error.contains("wraps itself"), "{error}");
        // A long chain of newtypes is fine; the same chain closed into a
        // circle is not.
        let chain = |last: &str| {
            let types: Vec<String> = (0..1000)
                .map(|i| format!(r#""T{i}":{{"NEWTYPESTRUCT":{{"TYPENAME":"T{}"}}}}"#, i + 1))
                .chain([format!(r#""T1000":{{"NEWTYPESTRUCT":{last}}}"#)])
                .collect();
            format!(
                r#"{{"args":[{{"TYPENAME":"T0"}}],"returns":"UNIT","types":{{{}}}}}"#,
                types.join(",")
            )
        };
        assert!(MethodSchema::parse(&chain(r#""U8""#)).is_ok());
        let error = MethodSchema::parse(&chain(r#"{"TYPENAME":"T500"}"#))
            .unwrap_err()
            .to_string();
        assert!(error.contains("wraps itself"), "{error}");
        let missing = r#"{"args":[],"returns":{"TYPENAME":"Nope"},"types":{}}"#;
        let error = MethodSchema::parse(missing).unwrap_err().to_string();
        assert!(error.contains("`Nope`"), "{error}");
        // Too long to read.
        let long = format!(
            r#"{{"args":[],"returns":"UNIT","types":{{}}}}{}"#,
            " ".repeat(MAX_SCHEMA_TEXT)
        );
        let error = MethodSchema::parse(&long).unwrap_err().to_string();
        assert!(error.contains("over the limit"), "{error}");
        let units = r#"{"args":[{"SEQ":"UNIT"}],"returns":"UNIT","types":{}}"#;
        let schema = MethodSchema::parse(units).unwrap();
        // A billion units claimed in 5 bytes.
        let body = [0xFC, 0x00, 0xCA, 0x9A, 0x3B];
        let read = Body::args(&body, Some(&schema.schema)).decode::<(Vec<()>,)>();
        assert!(matches!(read, Err(Failure::Codec(_))), "{read:?}");
    }

    /// What a reader that knows one field makes of a writer's `P`.
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct P {
        a: u8,
    }

    #[test]
    fn skipping_what_takes_no_bytes_is_bounded_too() {
        // A field the reader lacks, of 2^63 units, in a 1-byte body; and
        // 64 fields of tuple structs of 64, nested 12 deep: both would
        // keep a thread skipping for ever.
        let array = r#"{"args":[{"TYPENAME":"P"}],"returns":"UNIT","types":{"P":{"STRUCT":[{"a":"U8"},{"pad":{"TUPLEARRAY":{"CONTENT":"UNIT","SIZE":9223372036854775807}}}]}}}"#;
        let mut types = String::from(r#""T0":{"TUPLESTRUCT":["UNIT"]}"#);
        for level in 1..12 {
            let inner = format!(r#"{{"TYPENAME":"T{}"}}"#, level - 1);
            let elements = vec![inner; 64].join(",");
            types.push_str(&format!(r#","T{level}":{{"TUPLESTRUCT":[{elements}]}}"#));
        }
        let nested = format!(
            r#"{{"args":[{{"TYPENAME":"P"}}],"returns":"UNIT","types":{{"P":{{"STRUCT":[{{"a":"U8"}},{{"pad":{{"TYPENAME":"T11"}}}}]}},{types}}}}}"#
        );
        for text in [array, &nested] {
            let schema = MethodSchema::parse(text).unwrap();
            let read = Body::args(&[1], Some(&schema.schema)).decode::<(P,)>();
            let Err(Failure::Codec(e)) = read else {
                panic!("expected an error, got {read:?}");
            };
            assert!(e.to_string().contains("more elements"), "{e}");
        }
    }

    #[test]
    fn the_schemas_a_server_keeps_are_bounded_in_number_and_bytes() {
        let served = Served::new(std::iter::empty());
        for i in 0..200 {
            // Distinct texts of about 20 KiB each.
            let text = format!(
                r#"{{"args":[],"returns":"UNIT","types":{{}}}}{}"#,
                " ".repeat(20_000 + i)
            );
            served.peer(text.as_bytes(), |_| true).unwrap();
            let peers = lock(&served.peers);
            assert!(peers.known.len() <= MAX_PEER_SCHEMAS);
            assert!(peers.bytes <= MAX_PEER_BYTES, "{}", peers.bytes);
            assert_eq!(
                peers.bytes,
                peers.known.keys().map(|k| k.len()).sum::<usize>()
            );
        }
        let long = vec![b' '; MAX_SCHEMA_TEXT + 1];
        let error = served.peer(&long, |_| true).unwrap_err();
        assert!(
            matches!(&error, Refused::Mismatch(m) if m.contains("over the limit")),
            "{error:?}"
        );
        // A text not kept is read only if the connection may: one kept is
        // not asked about.
        let kept = lock(&served.peers).known.keys().next().unwrap().clone();
        assert!(served.peer(&kept, |_| panic!("asked")).is_ok());
        let new = br#"{"args":[],"returns":"UNIT","types":{}}"#;
        assert!(matches!(
            served.peer(new, |n| n != new.len()),
            Err(Refused::Busy)
        ));
    }
}
