"""One connection to a server (docs/PROTOCOL.md sections 1 to 5 and 8):
the handshake, frames, requests with their deadline and metadata, and the
messages of streams, with calls matched to their messages by id so that
any number of threads can have calls in flight at once."""

import collections
import select
import socket
import struct
import threading
import time

from .codec import ArgumentError
from .errors import Cancelled, ConnectionClosed, DeadlineExceeded, DecodeError, RpcError

HELLO = b"RKIT\x01\x00\x00\x00"
KIND_REQUEST, KIND_RESPONSE, KIND_CANCEL = 0x01, 0x02, 0x03
KIND_PING, KIND_PONG, KIND_DRAIN = 0x05, 0x06, 0x07
KIND_ITEMS, KIND_END, KIND_CREDIT, KIND_STOP = 0x08, 0x09, 0x0A, 0x0B
FLAG_EXTENSIONS, FLAG_SENDS_STREAM, FLAG_READS_STREAM = 0x01, 0x02, 0x04

# Every stream starts with this much credit (section 8).
START_CREDIT = 65536
# The most credit a stream may be granted in all (section 8).
MAX_CREDIT = 2**31 - 1


class Violation(Exception):
    """The server broke the protocol: the connection closes."""


class Call:
    """What has arrived for one call so far; changed under the
    connection's lock."""

    __slots__ = ("answer", "schema", "items", "credit", "stopped", "reads", "window")

    def __init__(self, reads=False):
        # (status, body) once the response is in; an exception when it
        # never will be (the server drained before reading the request, or
        # this side cancelled the call).
        self.answer = None
        self.schema = None  # the server's schema claim in its response
        self.items = collections.deque()  # items messages not yet read
        self.credit = START_CREDIT  # what this side may still send
        self.stopped = False  # the server reads no more of our stream
        self.reads = reads  # whether the call reads a stream
        self.window = START_CREDIT  # what the server may still send us

    def receive(self, kind, ident, payload, fields):
        """A message for this call, as `read_message` read it."""
        if kind == KIND_RESPONSE:
            self.answer, self.schema = fields[:2], fields[2]
        elif kind == KIND_ITEMS:
            self.take_items(ident, payload, fields)
        elif kind == KIND_CREDIT:
            self.add_credit(ident, fields)
        elif kind == KIND_STOP:
            self.stopped = True

    def take_items(self, ident, payload, fields):
        """An items message for this call, checked against the credit it
        was granted (section 8)."""
        if not self.reads:
            raise Violation("stream items for call %d, which reads no stream" % ident)
        if self.window <= 0:
            raise Violation("stream items for call %d beyond the credit granted" % ident)
        self.window -= len(payload)
        self.items.append(fields)

    def add_credit(self, ident, credit):
        """A grant of credit from the server."""
        self.credit += credit
        if self.credit > MAX_CREDIT:
            raise Violation("credit for call %d above 2^31 - 1" % ident)


class Connection:
    """A connection; thread-safe, with any number of calls in flight.

    There is no reader thread: a caller waiting for something reads the
    socket itself (one at a time), hands other callers what is theirs, and
    lets the next waiter read once its own has come. A call made alone thus
    costs no hand-over between threads, which in Python is most of a
    call's time.

    The socket stays blocking: reads wait in `select` up to the caller's
    deadline, so that a timeout meant for one reader never cuts another
    thread's send in half."""

    def __init__(self, address, timeout=10.0, ssl_context=None, server_hostname=None,
                 max_frame_length=16 * 1024 * 1024):
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        sock.settimeout(None)
        self._sock = sock
        self._buf = bytearray()
        self.max_frame_length = max_frame_length
        try:
            sock.sendall(HELLO)
            deadline = None if timeout is None else time.monotonic() + timeout
            while len(self._buf) < 8:
                if not self._take_more(deadline):
                    raise ConnectionClosed("no handshake from the server within %ss" % timeout)
        except BaseException:
            sock.close()
            raise
        if self._buf[:4] != b"RKIT":
            sock.close()
            raise RpcError("the server does not speak this protocol (first bytes %r)" % bytes(self._buf[:4]))
        version = struct.unpack_from("<H", self._buf, 4)[0]
        if version != 1:
            sock.close()
            raise RpcError("the server speaks protocol version %d; this client speaks 1" % version)
        del self._buf[:8]
        self._write = threading.Lock()
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._reading = False
        self._next_id = 0
        self._calls = {}
        self._closed = None
        self._draining = None
        self._abandoned = collections.deque()  # calls given up by `abandon`

    def _take_more(self, deadline):
        """Reads what the socket has, waiting up to `deadline`; False if
        nothing came by then."""
        sock = self._sock
        pending = getattr(sock, "pending", None)  # TLS may hold a record already
        if not (pending and pending()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                return False
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionClosed("the server closed the connection")
        self._buf += chunk
        return True

    def _read_frames(self, deadline):
        """Every whole frame the buffer holds, reading until there is at
        least one or `deadline` passes (then: what there is, maybe none)."""
        frames = []
        while True:
            while len(self._buf) >= 4:
                length = struct.unpack_from("<I", self._buf, 0)[0]
                if length > self.max_frame_length:
                    # Not waited for: a server could otherwise make us hold 4 GiB.
                    raise Violation("the server sent a frame of %d bytes, over the limit of %d"
                                    % (length, self.max_frame_length))
                if len(self._buf) < 4 + length:
                    break
                frames.append(bytes(self._buf[4:4 + length]))
                del self._buf[:4 + length]
            if frames or not self._take_more(deadline):
                return frames

    def send(self, frame):
        """Sends one whole frame; a failure closes the connection."""
        with self._write:
            self._write_all(frame)

    def _write_all(self, data, call_id=None):
        """Writes `data` (`_write` is held). Whatever stops it half-way (an
        error, KeyboardInterrupt) closes the connection: the peer would
        read the next frame as the rest of this one."""
        try:
            self._sock.sendall(data)
        except BaseException as e:
            self._fail("the connection broke: %s" % (e or type(e).__name__))
            self._shutdown()
            if call_id is not None:
                self.forget(call_id)
            if isinstance(e, OSError):
                raise ConnectionClosed(self._closed) from None
            raise

    def abandon(self, call_id):
        """Gives a call up from anywhere, a garbage collector's `__del__`
        included: takes no lock (one may be held by the very thread it
        runs on). The cancel goes out with the next request."""
        self._abandoned.append(call_id)

    def _take_abandoned(self):
        """The cancel frames of calls given up by `abandon`, which are
        forgotten here; `_lock` is held."""
        frames = bytearray()
        while self._abandoned:
            call_id = self._abandoned.popleft()
            if self._calls.pop(call_id, None) is not None:
                frames += header_frame(KIND_CANCEL, call_id)
        return frames

    def _fail(self, reason):
        with self._lock:
            if self._closed is None:
                self._closed = reason
            self._turn.notify_all()

    def start(self, service, method, body, timeout=None, metadata=(), flags=0, schema=None):
        """Sends a request; returns its id and the `Call` its messages
        arrive in."""
        call = Call(reads=bool(flags & FLAG_READS_STREAM))
        deadline_us = None if timeout is None else int(timeout * 1e6)
        # Built outside the locks (a large one takes a while); its id goes in below.
        frame = bytearray(request_frame(0, service, method, body, deadline_us, metadata, flags, schema))
        if len(frame) - 4 > self.max_frame_length:
            raise ArgumentError("the request to %s.%s is %d bytes, over the frame limit of %d"
                                % (service, method, len(frame) - 4, self.max_frame_length))
        # Ids rise in the order requests go on the wire (a drain names the
        # first id the server did not read): given and sent under one lock.
        with self._write:
            with self._lock:
                if self._closed is not None:
                    raise ConnectionClosed(self._closed)
                if self._draining is not None:
                    raise ConnectionClosed(self._draining)
                call_id = self._next_id
                self._next_id += 1
                self._calls[call_id] = call
                cancels = self._take_abandoned()
            struct.pack_into("<Q", frame, 6, call_id)
            self._write_all(cancels + frame if cancels else frame, call_id)
        return call_id, call

    def call(self, service, method, body, timeout=None, metadata=(), schema=None):
        """Sends one request and waits for its response: (status, body),
        and with `schema` (a claim, section 12) the server's claim in the
        response: (status, body, claim or None)."""
        call_id, call = self.start(service, method, body, timeout, metadata, schema=schema)
        try:
            self.wait(call, lambda c: c.answer is not None, deadline_after(timeout))
        finally:
            self.forget(call_id)
        status, body = answer(call)
        if schema is None:
            return status, body
        return status, body, call.schema

    def wait(self, call, ready, deadline, what="answer", block=True):
        """Reads until `ready(call)` holds, or the connection ends, or the
        monotonic `deadline` (None: none) passes. With `block` false, takes
        in only what has already arrived and returns whether it holds."""
        while True:
            with self._lock:
                while True:
                    if ready(call):
                        return True
                    if self._closed is not None:
                        raise ConnectionClosed(self._closed)
                    if not self._reading:
                        self._reading = True
                        cancels = self._take_abandoned()
                        break
                    if not block:
                        return False
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise DeadlineExceeded("no %s in time" % what)
                    self._turn.wait(left)
            frames, failure, pongs = [], None, []
            try:
                if cancels:
                    self.send(cancels)
                frames = self._read_frames(deadline if block else time.monotonic())
            except (OSError, RpcError, Violation) as e:
                failure = str(e) if not isinstance(e, OSError) else "the connection broke: %s" % e
            finally:
                # Whatever happened (KeyboardInterrupt too), the next
                # waiter may read.
                with self._lock:
                    self._reading = False
                    for frame in frames:
                        try:
                            self._dispatch(frame, pongs)
                        except (Violation, DecodeError, ValueError, struct.error) as e:
                            failure = "the server broke the protocol: %s" % e
                            break
                    if failure is not None and self._closed is None:
                        self._closed = failure
                        self._shutdown()
                    self._turn.notify_all()
            if pongs:
                try:
                    self.send(b"".join(pongs))
                except ConnectionClosed:
                    pass
            if not frames and not block:
                with self._lock:
                    return ready(call)
            # Checked after every batch too: a server that keeps sending
            # other frames (pings) must not hold the call past its deadline.
            if deadline is not None and deadline - time.monotonic() <= 0:
                with self._lock:
                    if ready(call):
                        return True
                raise DeadlineExceeded("no %s in time" % what)

    def forget(self, call_id):
        """Drops a call's state: messages still coming for it are ignored."""
        with self._lock:
            self._calls.pop(call_id, None)

    def cancel(self, call_id, forget=True):
        """Asks the server to stop a call (it answers status 10 if the call
        is still running). Unless told not to, the call is forgotten, and
        whoever still waits on it (the sender of its stream) sees it end."""
        with self._lock:
            call = self._calls.get(call_id)
            if forget:
                self._calls.pop(call_id, None)
                if call is not None:
                    call.stopped = True
                    if call.answer is None:
                        call.answer = Cancelled("the call was cancelled by this client")
                    self._turn.notify_all()
            if self._closed is not None:
                return
        try:
            self.send(header_frame(KIND_CANCEL, call_id))
        except ConnectionClosed:
            pass  # the connection is gone, and the call with it

    def spend(self, call, cost):
        """Takes what an items message costs from the call's credit."""
        with self._lock:
            call.credit -= cost

    def grant(self, call_id, call, credit):
        """Lets the server send `credit` more bytes of a call's stream."""
        with self._lock:
            call.window += credit
        self.send(credit_frame(call_id, credit))

    def _dispatch(self, payload, pongs):
        """Hands a message to its call; the lock is held. Pongs to send
        once it is released go on `pongs`."""
        kind, ident, fields = read_message(payload)
        if kind == KIND_PING:
            pongs.append(header_frame(KIND_PONG, ident))
            return
        if kind == KIND_DRAIN:
            self._draining = drained(self._calls, ident)
            return
        call = self._calls.get(ident)
        if call is None:
            return  # late: the call ended or was given up
        call.receive(kind, ident, payload, fields)

    def _shutdown(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self):
        """Ends the connection: every call still waiting fails with
        ConnectionClosed."""
        with self._lock:
            if self._closed is None:
                self._closed = "the connection was closed by this client"
            self._turn.notify_all()
        self._shutdown()
        try:
            self._sock.close()
        except OSError:
            pass


def request_frame(call_id, service, method, body, deadline_us=None, metadata=(), flags=0, schema=None):
    """A whole request frame (section 3): the deadline in microseconds,
    metadata as (key, value) pairs (a value as bytes or text), and a schema
    claim (section 12) as (fingerprint, canonical text as bytes)."""
    service_b, method_b = service.encode("utf-8"), method.encode("utf-8")
    block = bytearray()
    if deadline_us is not None:
        block += struct.pack("<HIQ", 0x0001, 8, deadline_us)
    for key, value in metadata:
        key_b = key.encode("utf-8")
        value_b = value if isinstance(value, bytes) else str(value).encode("utf-8")
        block += struct.pack("<HI", 0x0002, 2 + len(key_b) + 4 + len(value_b))
        block += struct.pack("<H", len(key_b)) + key_b + struct.pack("<I", len(value_b)) + value_b
    if schema is not None:
        fingerprint, text = schema
        block += struct.pack("<HIQ", 0x0003, 8 + len(text), fingerprint) + text
    if block:
        flags |= FLAG_EXTENSIONS
    payload = bytearray(struct.pack("<BBQ", KIND_REQUEST, flags, call_id))
    payload += bytes([len(service_b)]) + service_b + bytes([len(method_b)]) + method_b
    if block:
        payload += struct.pack("<I", len(block)) + block
    payload += body
    return struct.pack("<I", len(payload)) + payload


def header_frame(kind, ident):
    """A whole frame that is its header alone: cancel, ping, pong, end."""
    return struct.pack("<IBBQ", 10, kind, 0, ident)


def credit_frame(call_id, credit):
    """A whole credit frame (section 8)."""
    return struct.pack("<IBBQI", 14, KIND_CREDIT, 0, call_id, credit)


def items_frame(call_id, count, items):
    """A whole items frame (section 8): `count` values, encoded, in `items`."""
    return struct.pack("<IBBQI", 14 + len(items), KIND_ITEMS, 0, call_id, count) + items


def read_message(payload):
    """A message from the server (sections 3 and 8): (kind, id, fields),
    where fields are (status, body) for a response, (payload, offset of
    the count) for items, the bytes granted for credit, else None. Raises
    `DecodeError` for a message too short for what it says it holds."""
    if len(payload) < 10:
        raise DecodeError("a frame too short for a header")
    kind, flags, ident = struct.unpack_from("<BBQ", payload, 0)
    pos = 10
    if kind == KIND_RESPONSE:
        if len(payload) < 11:
            raise DecodeError("a response without a status")
        pos = 11
    claim = None
    if flags & FLAG_EXTENSIONS:
        if len(payload) < pos + 4:
            raise DecodeError("an extension block without its length")
        start = pos + 4
        pos = start + struct.unpack_from("<I", payload, pos)[0]
        if pos > len(payload):
            raise DecodeError("an extension block longer than its message")
        claim = _schema_claim(payload[start:pos])
    if kind == KIND_RESPONSE:
        return kind, ident, (payload[10], payload[pos:], claim)
    if kind == KIND_ITEMS:
        if len(payload) < pos + 4:
            raise DecodeError("an items message without its count")
        if struct.unpack_from("<I", payload, pos)[0] == 0 and len(payload) != pos + 4:
            raise DecodeError("an items message of no items with bytes after its count")
        return kind, ident, (payload, pos)
    if kind == KIND_CREDIT:
        if len(payload) != pos + 4:
            raise DecodeError("a credit message that is not 4 bytes")
        return kind, ident, struct.unpack_from("<I", payload, pos)[0]
    return kind, ident, None


def _schema_claim(block):
    """The first schema entry (section 12) of an extension block:
    (fingerprint, text as bytes), or None."""
    pos = 0
    while pos + 6 <= len(block):
        tag, length = struct.unpack_from("<HI", block, pos)
        value = block[pos + 6:pos + 6 + length]
        pos += 6 + length
        if tag == 0x0003 and len(value) >= 8:
            return struct.unpack_from("<Q", value, 0)[0], bytes(value[8:])
    return None


def drained(calls, first_unread):
    """A drain: requests from `first_unread` on were not read and will not
    be answered (they fail now); those before it will be. Returns why new
    calls are refused."""
    reason = "the server is shutting down (it drained the connection)"
    for call_id, call in calls.items():
        if call_id >= first_unread and call.answer is None:
            call.answer = ConnectionClosed(reason + " before reading this call; it did not run")
    return reason


def answer(call):
    """The call's (status, body); raises if it will never have one."""
    if isinstance(call.answer, Exception):
        raise call.answer
    return call.answer


def deadline_after(timeout):
    """When to give up waiting for a call with this timeout: a little past
    the server's own deadline, so that its answer wins."""
    return None if timeout is None else time.monotonic() + timeout + 1.0
