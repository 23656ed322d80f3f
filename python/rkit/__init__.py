"""rkit: call any rpc toolkit server from Python, with no generated code.

    import rkit
    proxy = rkit.ServerProxy("127.0.0.1:7878")
    proxy.Calculator.add(2, 3)        # 5
    proxy.Calculator.div(1, 0)        # raises rkit.RemoteError, .value == "DivByZero"
    for tick in proxy.Market.ticks("ACME", 3): print(tick)   # a stream is an iterator

`rkit.aio` has the same calls for asyncio. Pure Python, standard library
only. It reads the server's description (docs/PROTOCOL.md section 9) and
encodes each call from it.
"""

from .errors import (BadRequest, Cancelled, ConnectionClosed, DeadlineExceeded, DecodeError, HandlerPanicked, Internal,
                     PermissionDenied, RemoteError, ResourceExhausted, RpcError, SchemaMismatch, Unauthenticated,
                     UnknownMethod, UnknownService)
from .proxy import ServerProxy
from .streams import Stream
from .codec import ArgumentError

__all__ = ["ArgumentError", "BadRequest", "Cancelled", "ConnectionClosed", "DeadlineExceeded", "DecodeError",
           "HandlerPanicked",
           "Internal", "PermissionDenied", "RemoteError", "ResourceExhausted", "RpcError", "SchemaMismatch", "ServerProxy", "Stream",
           "Unauthenticated", "UnknownMethod", "UnknownService"]
