"""rkit for asyncio: the same calls as `rkit.ServerProxy`, awaited.

    proxy = await rkit.aio.connect("127.0.0.1:7878")
    await proxy.Calculator.add(2, 3)                     # 5
    ticks = await proxy.Market.ticks("ACME", 3)          # the stream is open
    async for tick in ticks: ...
    await proxy.Market.upload("f", chunks)               # any iterable or async iterable
    await proxy.close()

One connection, read by a task of its own; calls from any number of tasks
are in flight on it at once. The frames, codec, flow control and errors
are those of the threaded client.
"""

import asyncio
import json
import socket
import struct
import time

from .codec import ArgumentError, Codec
from .connection import (FLAG_READS_STREAM, FLAG_SENDS_STREAM, HELLO, KIND_CANCEL, KIND_DRAIN, KIND_END,
                         KIND_PING, KIND_PONG, Call, Violation, answer, credit_frame, drained, header_frame,
                         items_frame, read_message, request_frame)
from .errors import Cancelled, ConnectionClosed, DeadlineExceeded, RpcError, status_error
from .proxy import Described, Method, Service, _string
from .streams import WINDOW, Reading, end


class AsyncCall(Call):
    """A call's state, with the event every message for it sets."""

    __slots__ = ("event",)

    def __init__(self, reads):
        super().__init__(reads)
        self.event = asyncio.Event()


class Connection:
    """A connection whose frames a reader task hands to their calls."""

    def __init__(self, reader, writer, max_frame_length):
        self._reader, self._writer = reader, writer
        self._max_frame_length = max_frame_length
        self._next_id = 0
        self._calls = {}
        self._closed = None
        self._draining = None
        self._task = asyncio.ensure_future(self._read_all())

    @classmethod
    async def open(cls, address, timeout=10.0, ssl_context=None, server_hostname=None,
                   max_frame_length=16 * 1024 * 1024):
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        opening = asyncio.open_connection(host, int(port), ssl=ssl_context,
                                          server_hostname=(server_hostname or host) if ssl_context else None)
        reader, writer = await asyncio.wait_for(opening, timeout)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(HELLO)
        hello = await asyncio.wait_for(reader.readexactly(8), timeout)
        if hello[:4] != b"RKIT":
            writer.close()
            raise RpcError("the server does not speak this protocol (first bytes %r)" % hello[:4])
        if hello[4:6] != b"\x01\x00":
            writer.close()
            raise RpcError("the server speaks protocol version %d; this client speaks 1"
                           % struct.unpack_from("<H", hello, 4)[0])
        return cls(reader, writer, max_frame_length)

    async def _read_all(self):
        try:
            while True:
                (length,) = struct.unpack("<I", await self._reader.readexactly(4))
                if length > self._max_frame_length:
                    raise ConnectionClosed("the server sent a frame of %d bytes, over the limit of %d"
                                           % (length, self._max_frame_length))
                self._dispatch(await self._reader.readexactly(length))
        except asyncio.IncompleteReadError:
            self._closed = "the server closed the connection"
        except (OSError, RpcError, Violation, ValueError, struct.error) as e:
            self._closed = str(e) if isinstance(e, RpcError) else "the connection broke: %s" % e
            self._writer.transport.abort()
        except asyncio.CancelledError:
            self._closed = "the connection was closed"
        for call in self._calls.values():
            call.event.set()

    def _dispatch(self, payload):
        kind, ident, fields = read_message(payload)
        if kind == KIND_PING:
            self.send(header_frame(KIND_PONG, ident))
            return
        if kind == KIND_DRAIN:
            self._draining = drained(self._calls, ident)
            for call in self._calls.values():
                call.event.set()
            return
        call = self._calls.get(ident)
        if call is None:
            return  # late: the call ended or was given up
        call.receive(kind, ident, payload, fields)
        call.event.set()

    def send(self, frame):
        self._writer.write(frame)

    async def start(self, service, method, body, timeout=None, metadata=(), flags=0, schema=None):
        if self._closed is not None:
            raise ConnectionClosed(self._closed)
        if self._draining is not None:
            raise ConnectionClosed(self._draining)
        call = AsyncCall(reads=bool(flags & FLAG_READS_STREAM))
        call_id = self._next_id
        self._next_id += 1
        self._calls[call_id] = call
        deadline_us = None if timeout is None else int(timeout * 1e6)
        frame = request_frame(call_id, service, method, body, deadline_us, metadata, flags, schema)
        if len(frame) - 4 > self._max_frame_length:
            self.forget(call_id)
            raise ArgumentError("the request to %s.%s is %d bytes, over the frame limit of %d"
                                % (service, method, len(frame) - 4, self._max_frame_length))
        self.send(frame)
        await self._writer.drain()
        return call_id, call

    async def wait(self, call, ready, deadline, what="answer"):
        while not ready(call):
            if self._closed is not None:
                raise ConnectionClosed(self._closed)
            call.event.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DeadlineExceeded("no %s in time" % what)
            if left is None:
                await call.event.wait()
                continue
            # Woken at the deadline to see it passed: cheaper than
            # `wait_for`, which makes a task of every wait.
            timer = asyncio.get_running_loop().call_later(left, call.event.set)
            try:
                await call.event.wait()
            finally:
                timer.cancel()

    async def call(self, service, method, body, timeout=None, metadata=(), schema=None):
        """Sends one request and waits for its response: (status, body, the
        server's schema claim in it or None), as the threaded client's
        `call` with a `schema`."""
        call_id, call = await self.start(service, method, body, timeout, metadata, schema=schema)
        try:
            await self.wait(call, lambda c: c.answer is not None, _deadline(timeout))
        finally:
            self.forget(call_id)
        status, body = answer(call)
        return status, body, call.schema

    def forget(self, call_id):
        self._calls.pop(call_id, None)

    def grant(self, call_id, call, credit):
        call.window += credit
        self.send(credit_frame(call_id, credit))

    def cancel(self, call_id, forget=True):
        call = self._calls.get(call_id)
        if forget:
            self.forget(call_id)
            if call is not None:
                call.stopped = True
                if call.answer is None:
                    call.answer = Cancelled("the call was cancelled by this client")
                call.event.set()
        if self._closed is None:
            self.send(header_frame(KIND_CANCEL, call_id))

    async def close(self):
        self._task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ConnectionError):
            pass


def _deadline(timeout):
    return None if timeout is None else time.monotonic() + timeout + 1.0


class Stream:
    """The items of a stream the server sends: `async for item in stream`.
    `await stream.close()` (or `async with`) before its end cancels it."""

    def __init__(self, connection, call_id, call, codec, item_format, error_format, deadline, sender):
        self._connection, self._id, self._call = connection, call_id, call
        self._codec, self._error_format = codec, error_format
        self._deadline, self._sender = deadline, sender
        self._reading = Reading(call, codec, item_format)
        self._done = False

    def __aiter__(self):
        return self

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def __anext__(self):
        while self._reading.left == 0:
            if self._done:
                raise StopAsyncIteration
            await self._next_message()
        try:
            return self._reading.item()
        except RpcError:
            await self.close()
            raise

    async def _next_message(self):
        call = self._call
        await self._connection.wait(call, lambda c: c.items or c.answer is not None, self._deadline, "stream item")
        if call.items:
            grant = self._reading.take()
            if grant:
                self._connection.grant(self._id, call, grant)
            return
        self._done = True
        self._connection.forget(self._id)
        if self._sender is not None:
            await self._sender.finished()
        end(answer(call), self._codec, self._error_format)

    async def close(self):
        if not self._done:
            self._done = True
            self._reading.left = 0
            self._connection.cancel(self._id)
        if self._sender is not None:
            self._sender.task.cancel()


class Sender:
    """Sends a call's stream argument from an iterable or async iterable,
    within the server's credit, on a task of its own."""

    def __init__(self, connection, call_id, call, codec, item_format, deadline, where, items):
        self._connection, self._id, self._call = connection, call_id, call
        self._codec, self._format, self._deadline, self._where = codec, item_format, deadline, where
        self.error = None
        self.task = asyncio.ensure_future(self._run(items))

    async def _run(self, items):
        call, connection = self._call, self._connection
        try:
            index = 0
            async for item in _each(items):
                # Lets the reader task take in an answer or a stop first:
                # `drain` yields only once the write buffer is full.
                await asyncio.sleep(0)
                value = bytearray()
                self._codec.encode(item, self._format, value, "%s[%d]" % (self._where, index))
                index += 1
                await connection.wait(call, lambda c: c.credit > 0 or c.stopped or c.answer is not None,
                                      self._deadline, "credit to send")
                if call.stopped or call.answer is not None:
                    return
                frame = items_frame(self._id, 1, value)
                call.credit -= len(frame) - 4
                connection.send(frame)
                await connection._writer.drain()
            if not call.stopped and call.answer is None:
                connection.send(header_frame(KIND_END, self._id))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the caller sees it
            self.error = e
            connection.cancel(self._id, forget=False)

    async def finished(self):
        """Waits for the task; raises what stopped it early, if anything."""
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        if self.error is not None:
            raise self.error


async def _each(items):
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class AsyncMethod(Method):
    """A remote method: `await` its call."""

    async def __call__(self, *args, **kwargs):
        d = self._described
        if "opaque" in d:
            raise ArgumentError("%s.%s cannot be called from here: %s" % (self._service, d["name"], d["opaque"]))
        stream = d.get("stream_arg")
        args, items = self._arguments(args, kwargs)
        if stream is not None and not (hasattr(items, "__aiter__") or hasattr(items, "__iter__")):
            raise ArgumentError("argument %r: expected an iterable of items, found %r" % (stream["name"], items))
        codec = self._proxy._codec(self._service)
        proxy, connection = self._proxy, self._proxy._connection
        if d["shape"] == "unary" and "schema" in d:
            body, claim, omitted = self._claim(codec, args)
            status, reply, theirs = await connection.call(self._service, d["name"], body, proxy._timeout,
                                                          proxy._metadata, schema=claim)
            if claim is not None:
                self._claimed(status, theirs, omitted)
            return self._unary_answer(codec, status, reply)
        body = bytearray()
        for arg, value in zip(d["args"], args):
            codec.encode(value, arg["format"], body, "argument %r" % arg["name"])
        if d["shape"] == "unary":
            status, reply, _ = await connection.call(self._service, d["name"], bytes(body), proxy._timeout,
                                                     proxy._metadata)
            return self._unary_answer(codec, status, reply)
        reads = d["shape"] in ("server", "bidi")
        flags = (FLAG_SENDS_STREAM if stream is not None else 0) | (FLAG_READS_STREAM if reads else 0)
        call_id, call = await connection.start(self._service, d["name"], bytes(body), proxy._timeout,
                                               proxy._metadata, flags)
        deadline = _deadline(proxy._timeout)
        try:
            if reads:
                connection.grant(call_id, call, WINDOW - 65536)
            sender = None
            if stream is not None:
                sender = Sender(connection, call_id, call, codec, stream["format"], deadline,
                                "argument %r" % stream["name"], items)
            if not reads:
                await sender.finished()
                await connection.wait(call, lambda c: c.answer is not None, deadline)
                status, reply = answer(call)
                return self._unary_answer(codec, status, reply)
            await connection.wait(call, lambda c: c.items or c.answer is not None, deadline, "stream")
            error_format = d.get("returns_error", {}).get("format")
            if not call.items:
                if sender is not None:
                    await sender.finished()
                end(answer(call), codec, error_format)
            opened = Stream(connection, call_id, call, codec, d["returns"]["format"], error_format, deadline, sender)
            call_id = None  # the stream forgets it when done
            return opened
        finally:
            # Not opened (an error, an interrupt): the server must stop too,
            # and a sender with it.
            if call_id is not None:
                if call.answer is None:
                    connection.cancel(call_id)
                else:
                    connection.forget(call_id)


class ServerProxy(Described):
    """A server, described once by `connect`; its services are attributes
    whose methods are awaited."""

    async def _reflect(self, method, body):
        status, reply, _ = await self._connection.call("rpc.Reflection", method, body, self._timeout)
        if status != 0:
            raise status_error(status, reply)
        text, _ = Codec({}).read(reply, 0, "STR", "the description")
        return text

    async def close(self):
        await self._connection.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


async def connect(address, timeout=10.0, metadata=(), ssl_context=None, server_hostname=None):
    """Connects to the server at `address` and reads its description."""
    connection = await Connection.open(address, timeout, ssl_context, server_hostname)
    proxy = ServerProxy(connection, timeout, metadata)
    try:
        for name in json.loads(await proxy._reflect("list", b""))["services"]:
            described = json.loads(await proxy._reflect("describe", _string(name)))
            proxy._services[name] = Service(proxy, described, AsyncMethod)
    except BaseException:
        await connection.close()
        raise
    return proxy
