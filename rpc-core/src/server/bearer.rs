//! The simplest useful interceptor: one shared secret.

use std::fmt;

use subtle::ConstantTimeEq;

use super::interceptor::{CallInfo, Interceptor, Rejection};

/// The metadata key a bearer token travels under.
const AUTHORIZATION: &str = "authorization";

/// An [`Interceptor`] that lets through only calls whose `authorization`
/// metadata is `Bearer <token>`, for the one token it was made with.
///
/// The comparison takes the same time however many leading bytes match
/// (`subtle`'s constant-time equality), so timing does not reveal the
/// token byte by byte; it does reveal whether the lengths differ. Send
/// tokens over TLS only: metadata is otherwise in the clear.
///
/// ```
/// use rpc_core::{BearerToken, Server};
///
/// let builder = Server::builder().interceptor(BearerToken::new("s3cret"));
/// // A client sends it with
/// // `channel.with_metadata("authorization", "Bearer s3cret")`.
/// # drop(builder);
/// ```
pub struct BearerToken {
    /// `Bearer <token>`, as the client must send it.
    expected: Vec<u8>,
}

impl BearerToken {
    /// Accepts calls that carry `token`.
    pub fn new(token: impl AsRef<str>) -> Self {
        BearerToken {
            expected: format!("Bearer {}", token.as_ref()).into_bytes(),
        }
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl Interceptor for BearerToken {
    fn check(&self, call: &CallInfo<'_>) -> Result<(), Rejection> {
        let Some(presented) = call.metadata().get(AUTHORIZATION) else {
            return Err(Rejection::unauthenticated(
                "the call carries no `authorization` metadata; send `Bearer <token>`",
            ));
        };
        if bool::from(presented.ct_eq(&self.expected)) {
            Ok(())
        } else {
            Err(Rejection::unauthenticated("the bearer token is not valid"))
        }
    }
}
