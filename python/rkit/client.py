"""One connection to a server (docs/PROTOCOL.md sections 1 to 5): the
handshake, frames, requests with their deadline and metadata, and a reader
thread that matches responses to calls by id, so that any number of
threads can have calls in flight at once."""

import json
import socket
import struct
import threading
import time

from .codec import ArgumentError, Codec

HELLO = b"RKIT\x01\x00\x00\x00"
KIND_REQUEST, KIND_RESPONSE, KIND_PING, KIND_PONG, KIND_DRAIN = 0x01, 0x02, 0x05, 0x06, 0x07


class RpcError(Exception):
    """A call failed. `code` is the status (docs/PROTOCOL.md section 4), or
    None for a failure of the connection."""

    code = None

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


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


_BY_CODE = {c.code: c for c in (UnknownService, UnknownMethod, BadRequest, HandlerPanicked, Internal,
                                ResourceExhausted, DeadlineExceeded, Unauthenticated, PermissionDenied,
                                Cancelled)}


class RemoteError(Exception):
    """The method answered with its own error (the Err of a Result); the
    error is `value`."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


class Connection:
    """A connection; thread-safe, with any number of calls in flight.

    There is no reader thread: a caller waiting for its answer reads the
    socket itself (one at a time), hands other callers their answers, and
    lets the next waiter read once its own has come. A call made alone thus
    costs no hand-over between threads, which in Python is most of a
    call's time."""

    def __init__(self, address, timeout=10.0, ssl_context=None, server_hostname=None):
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        self._sock = sock
        self._buf = bytearray()
        sock.sendall(HELLO)
        hello = self._take(8, timeout)
        if hello[:4] != b"RKIT":
            raise RpcError("the server does not speak this protocol (first bytes %r)" % bytes(hello[:4]))
        self._write = threading.Lock()
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._reading = False
        self._next_id = 0
        self._pending = {}
        self._closed = None

    def _take(self, n, timeout):
        """The next `n` bytes, read as needed; bytes read before a timeout
        stay for the next reader."""
        self._sock.settimeout(timeout)
        while len(self._buf) < n:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionClosed("the server closed the connection")
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _read_frame(self, timeout):
        while len(self._buf) < 4:
            self._take_more(timeout)
        length = struct.unpack_from("<I", self._buf, 0)[0]
        while len(self._buf) < 4 + length:
            self._take_more(timeout)
        payload = bytes(self._buf[4:4 + length])
        del self._buf[:4 + length]
        return payload

    def _take_more(self, timeout):
        self._sock.settimeout(timeout)
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionClosed("the server closed the connection")
        self._buf += chunk

    def call(self, service, method, body, timeout=None, metadata=()):
        """Sends one request and waits for its response: (status, body)."""
        service_b, method_b = service.encode("utf-8"), method.encode("utf-8")
        block = bytearray()
        if timeout is not None:
            block += struct.pack("<HIQ", 0x0001, 8, int(timeout * 1e6))
        for key, value in metadata:
            key_b = key.encode("utf-8")
            value_b = value if isinstance(value, bytes) else str(value).encode("utf-8")
            block += struct.pack("<HI", 0x0002, 2 + len(key_b) + 4 + len(value_b))
            block += struct.pack("<H", len(key_b)) + key_b + struct.pack("<I", len(value_b)) + value_b
        flags = 0x01 if block else 0x00
        with self._lock:
            if self._closed is not None:
                raise ConnectionClosed(self._closed)
            call_id = self._next_id
            self._next_id += 1
            self._pending[call_id] = None
        payload = bytearray(struct.pack("<BBQ", KIND_REQUEST, flags, call_id))
        payload += bytes([len(service_b)]) + service_b + bytes([len(method_b)]) + method_b
        if block:
            payload += struct.pack("<I", len(block)) + block
        payload += body
        with self._write:
            self._sock.sendall(struct.pack("<I", len(payload)) + payload)
        # A little past the server's deadline, so that its answer wins.
        deadline = None if timeout is None else time.monotonic() + timeout + 1.0
        while True:
            with self._lock:
                while True:
                    answer = self._pending[call_id]
                    if answer is not None:
                        del self._pending[call_id]
                        if isinstance(answer, Exception):
                            raise answer
                        return answer
                    if self._closed is not None:
                        del self._pending[call_id]
                        raise ConnectionClosed(self._closed)
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        del self._pending[call_id]
                        raise DeadlineExceeded("no answer within %ss" % timeout)
                    if not self._reading:
                        self._reading = True
                        break
                    self._turn.wait(left)
            try:
                frame = self._read_frame(left)
            except socket.timeout:
                frame = None
            except (OSError, ConnectionClosed) as e:
                with self._lock:
                    self._reading = False
                    self._closed = str(e) if isinstance(e, ConnectionClosed) else "the connection broke: %s" % e
                    self._turn.notify_all()
                continue
            with self._lock:
                self._reading = False
                if frame is not None:
                    self._dispatch(frame)
                self._turn.notify_all()

    def _dispatch(self, payload):
        """Hands a frame to its caller; the lock is held."""
        if len(payload) < 10:
            self._closed = "the server sent a frame too short for a header"
            return
        kind, flags, ident = struct.unpack_from("<BBQ", payload, 0)
        if kind == KIND_PING:
            pong = struct.pack("<BBQ", KIND_PONG, 0, ident)
            with self._write:
                self._sock.sendall(struct.pack("<I", len(pong)) + pong)
        elif kind == KIND_RESPONSE and len(payload) >= 11:
            pos = 11
            if flags & 0x01:
                pos += 4 + struct.unpack_from("<I", payload, pos)[0]
            if ident in self._pending:
                self._pending[ident] = (payload[10], payload[pos:])

    def close(self):
        try:
            self._sock.close()
        except OSError:
            pass


def status_error(status, body):
    """The exception for a response that is not OK."""
    message = bytes(body).decode("utf-8", "replace")
    cls = _BY_CODE.get(status, RpcError)
    return cls(message, status) if cls is RpcError else cls(message)


class Method:
    """A remote method: call it like a function."""

    def __init__(self, proxy, service, described):
        self._proxy, self._service, self._described = proxy, service, described
        self.__doc__ = described.get("doc", "")

    def __call__(self, *args, **kwargs):
        d = self._described
        if d.get("shape") != "unary":
            raise NotImplementedError("%s.%s is a %s stream method; this version of rkit calls unary methods only"
                                      % (self._service, d["name"], d.get("shape")))
        if "opaque" in d:
            raise ArgumentError("%s.%s cannot be called from here: %s" % (self._service, d["name"], d["opaque"]))
        names = [a["name"] for a in d["args"]]
        if kwargs:
            if args:
                raise ArgumentError("give the arguments by position or by name, not both")
            missing = [n for n in names if n not in kwargs]
            if missing or len(kwargs) != len(names):
                raise ArgumentError("%s takes %s" % (d["name"], ", ".join(names)))
            args = tuple(kwargs[n] for n in names)
        if len(args) != len(names):
            raise ArgumentError("%s takes %d argument(s) (%s), %d given" % (d["name"], len(names), ", ".join(names), len(args)))
        codec = self._proxy._codec(self._service)
        body = bytearray()
        for arg, value in zip(d["args"], args):
            codec.encode(value, arg["format"], body, "argument %r" % arg["name"])
        status, reply = self._proxy._connection.call(self._service, d["name"], bytes(body),
                                                     self._proxy._timeout, self._proxy._metadata)
        if status != 0:
            raise status_error(status, reply)
        value, end = codec.decode(reply, 0, d["returns"]["format"])
        if end != len(reply):
            raise RpcError("%d bytes left over after the reply" % (len(reply) - end))
        if d["returns"]["format"] == {"TYPENAME": "Result"}:
            (variant, payload), = value.items()
            if variant == "Err":
                raise RemoteError(payload)
            return payload
        return value


class Service:
    """A remote service: its methods are attributes."""

    def __init__(self, proxy, described):
        self._proxy = proxy
        self._described = described
        self.__doc__ = described.get("doc", "")
        self._methods = {m["name"]: Method(proxy, described["service"], m) for m in described["methods"]}

    def __getattr__(self, name):
        try:
            return self._methods[name]
        except KeyError:
            raise AttributeError("%s has no method %r (it has %s)"
                                 % (self._described["service"], name, ", ".join(self._methods))) from None


class ServerProxy:
    """A server, described once when made; its services are attributes.

        proxy = rkit.ServerProxy("127.0.0.1:7878")
        proxy.Calculator.add(2, 3)
    """

    def __init__(self, address, timeout=10.0, metadata=(), ssl_context=None, server_hostname=None):
        self._timeout = timeout
        self._metadata = tuple(metadata.items()) if isinstance(metadata, dict) else tuple(metadata)
        self._connection = Connection(address, timeout, ssl_context, server_hostname)
        self._services = {}
        self._codecs = {}
        for name in json.loads(self._reflect("list", b""))["services"]:
            described = json.loads(self._reflect("describe", _string(name)))
            self._services[name] = Service(self, described)

    def _reflect(self, method, body):
        status, reply = self._connection.call("rpc.Reflection", method, body, self._timeout)
        if status != 0:
            raise status_error(status, reply)
        text, _ = Codec({}).decode(reply, 0, "STR")
        return text

    def _codec(self, service):
        if service not in self._codecs:
            self._codecs[service] = Codec(self._services[service]._described.get("types", {}))
        return self._codecs[service]

    def __getattr__(self, name):
        try:
            return self._services[name]
        except KeyError:
            raise AttributeError("the server has no service %r (it has %s)" % (name, ", ".join(self._services))) from None

    def describe(self):
        """Every service and method, a line each, like xmlrpc's methodHelp."""
        lines = []
        for name, service in self._services.items():
            lines.append(name)
            for m in service._described["methods"]:
                args = ", ".join("%s: %s" % (a["name"], a["type"]) for a in m["args"])
                lines.append("  %s(%s) -> %s    %s" % (m["name"], args, m["returns"]["type"], m.get("doc", "").split("\n")[0]))
        return "\n".join(lines)

    def close(self):
        self._connection.close()


def _string(text):
    out = bytearray()
    Codec({}).encode(text, "STR", out)
    return bytes(out)
