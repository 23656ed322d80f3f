//! The status codes a server answers calls with (docs/PROTOCOL.md, §4).

use std::fmt;

/// What a server said of a call: the status byte of its response, as a
/// caller sees it in [`RpcError::code`](crate::RpcError::code).
///
/// The wire values are fixed (they are the protocol); new codes may be
/// added, so match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 0: the call ran and its value came back.
    Ok,
    /// 1: the server has no service of that name.
    UnknownService,
    /// 2: the service has no method of that name.
    UnknownMethod,
    /// 3: the arguments did not decode as the method's.
    BadRequest,
    /// 4: the handler panicked.
    HandlerPanicked,
    /// 5: the server could not send the value.
    Internal,
    /// 6: the call was refused for lack of room; it did not run.
    ResourceExhausted,
    /// 7: the call's deadline passed (before it ran, or while it ran).
    DeadlineExceeded,
    /// 8: the call carries no valid credentials.
    Unauthenticated,
    /// 9: the caller may not make this call.
    PermissionDenied,
    /// 10: the call was cancelled.
    Cancelled,
    /// 11: the two sides' types for the call differ in a way that cannot
    /// be resolved (docs/EVOLUTION.md); it did not run, or its reply was
    /// not read.
    SchemaMismatch,
}

impl Code {
    /// The code a status byte stands for; `None` for a value this version
    /// does not know.
    pub fn from_wire(value: u8) -> Option<Code> {
        Some(match value {
            0 => Code::Ok,
            1 => Code::UnknownService,
            2 => Code::UnknownMethod,
            3 => Code::BadRequest,
            4 => Code::HandlerPanicked,
            5 => Code::Internal,
            6 => Code::ResourceExhausted,
            7 => Code::DeadlineExceeded,
            8 => Code::Unauthenticated,
            9 => Code::PermissionDenied,
            10 => Code::Cancelled,
            11 => Code::SchemaMismatch,
            _ => return None,
        })
    }

    /// The status byte on the wire.
    pub fn wire(self) -> u8 {
        match self {
            Code::Ok => 0,
            Code::UnknownService => 1,
            Code::UnknownMethod => 2,
            Code::BadRequest => 3,
            Code::HandlerPanicked => 4,
            Code::Internal => 5,
            Code::ResourceExhausted => 6,
            Code::DeadlineExceeded => 7,
            Code::Unauthenticated => 8,
            Code::PermissionDenied => 9,
            Code::Cancelled => 10,
            Code::SchemaMismatch => 11,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Code::Ok => "OK",
            Code::UnknownService => "UNKNOWN_SERVICE",
            Code::UnknownMethod => "UNKNOWN_METHOD",
            Code::BadRequest => "BAD_REQUEST",
            Code::HandlerPanicked => "HANDLER_PANICKED",
            Code::Internal => "INTERNAL",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::Cancelled => "CANCELLED",
            Code::SchemaMismatch => "SCHEMA_MISMATCH",
        })
    }
}

/// A server's answer to a call that did not succeed: a [`Code`] and the
/// server's message, as in [`RpcError::Status`](crate::RpcError::Status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    pub(crate) fn new(code: Code, message: String) -> Self {
        Status { code, message }
    }

    /// What the server said of the call.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The server's explanation (a panic's message, for
    /// [`Code::HandlerPanicked`]).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the code says the call did not run: refused before any
    /// handler code (no such service or method, undecodable arguments, no
    /// room, no credentials or permission).
    pub fn did_not_run(&self) -> bool {
        matches!(
            self.code,
            Code::UnknownService
                | Code::UnknownMethod
                | Code::BadRequest
                | Code::ResourceExhausted
                | Code::Unauthenticated
                | Code::PermissionDenied
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Status;

    #[test]
    fn codes_round_trip_and_match_the_envelope() {
        for value in 0..=255u8 {
            if let Some(code) = Code::from_wire(value) {
                assert_eq!(code.wire(), value);
            }
        }
        let pairs = [
            (Status::OK, Code::Ok),
            (Status::UNKNOWN_SERVICE, Code::UnknownService),
            (Status::UNKNOWN_METHOD, Code::UnknownMethod),
            (Status::BAD_REQUEST, Code::BadRequest),
            (Status::HANDLER_PANICKED, Code::HandlerPanicked),
            (Status::INTERNAL, Code::Internal),
            (Status::RESOURCE_EXHAUSTED, Code::ResourceExhausted),
            (Status::DEADLINE_EXCEEDED, Code::DeadlineExceeded),
            (Status::UNAUTHENTICATED, Code::Unauthenticated),
            (Status::PERMISSION_DENIED, Code::PermissionDenied),
            (Status::CANCELLED, Code::Cancelled),
            (Status::SCHEMA_MISMATCH, Code::SchemaMismatch),
        ];
        for (status, code) in pairs {
            assert_eq!(Code::from_wire(status.0), Some(code));
        }
        assert_eq!(Code::from_wire(12), None);
    }
}
