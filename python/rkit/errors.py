"""The exceptions of a call: one per status of docs/PROTOCOL.md section 4,
the connection's own failures, and a method's typed error."""


class RpcError(Exception):
    """A call failed. `code` is the status (docs/PROTOCOL.md section 4), or
    None for a failure of the connection."""

    code = None

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class DecodeError(RpcError, ValueError):
    """Bytes from the server do not hold a value of the type it described."""


class ConnectionClosed(RpcError):
    """The connection ended before the call was answered."""


class UnknownService(RpcError):
    code = 1


class UnknownMethod(RpcError):
    code = 2


class BadRequest(RpcError):
    code = 3


class HandlerPanicked(RpcError):
    code = 4


class Internal(RpcError):
    code = 5


class ResourceExhausted(RpcError):
    code = 6


class DeadlineExceeded(RpcError):
    code = 7


class Unauthenticated(RpcError):
    code = 8


class PermissionDenied(RpcError):
    code = 9


class Cancelled(RpcError):
    code = 10


class SchemaMismatch(RpcError):
    """The values sent do not fit the server's types (docs/EVOLUTION.md);
    the message names the type and field."""
    code = 11


_BY_CODE = {c.code: c for c in (UnknownService, UnknownMethod, BadRequest, HandlerPanicked, Internal,
                                ResourceExhausted, DeadlineExceeded, Unauthenticated, PermissionDenied,
                                Cancelled, SchemaMismatch)}


class RemoteError(Exception):
    """The method answered with its own error (the Err of a Result); the
    error is `value`."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


def status_error(status, body):
    """The exception for a response that is not OK."""
    message = bytes(body).decode("utf-8", "replace")
    cls = _BY_CODE.get(status, RpcError)
    return cls(message, status) if cls is RpcError else cls(message)
