"""Calling a server as its description says (docs/PROTOCOL.md section 9):
services and methods as attributes, arguments encoded from their formats,
streams as iterators."""

import json

from .codec import ArgumentError, Codec
from .connection import FLAG_READS_STREAM, FLAG_SENDS_STREAM, Connection, answer, deadline_after
from .errors import RemoteError, RpcError, status_error
from .streams import WINDOW, Sender, Stream, end

class Method:
    """A remote method: call it like a function."""

    def __init__(self, proxy, service, described):
        self._proxy, self._service, self._described = proxy, service, described
        self.__doc__ = described.get("doc", "")

    def __call__(self, *args, **kwargs):
        d = self._described
        if "opaque" in d:
            raise ArgumentError("%s.%s cannot be called from here: %s" % (self._service, d["name"], d["opaque"]))
        args, items = self._arguments(args, kwargs)
        if items is not None:
            try:
                items = iter(items)
            except TypeError:
                raise ArgumentError("argument %r: expected an iterable of items, found %r"
                                    % (d["stream_arg"]["name"], items)) from None
        codec = self._proxy._codec(self._service)
        proxy = self._proxy
        if d["shape"] == "unary" and "schema" in d:
            return self._claimed_call(codec, args)
        body = bytearray()
        for arg, value in zip(d["args"], args):
            codec.encode(value, arg["format"], body, "argument %r" % arg["name"])
        if d["shape"] == "unary":
            status, reply = proxy._connection.call(self._service, d["name"], bytes(body), proxy._timeout,
                                                   proxy._metadata)
            return self._unary_answer(codec, status, reply)
        return self._stream_call(codec, bytes(body), items)

    def _claimed_call(self, codec, args):
        """A unary call that claims its schema (docs/PROTOCOL.md section
        12)."""
        body, claim, omitted = self._claim(codec, args)
        proxy = self._proxy
        if claim is None:
            status, reply = proxy._connection.call(self._service, self._described["name"], body, proxy._timeout,
                                                   proxy._metadata)
        else:
            status, reply, theirs = proxy._connection.call(self._service, self._described["name"], body,
                                                           proxy._timeout, proxy._metadata, schema=claim)
            self._claimed(status, theirs, omitted)
        # The reply is written with the server's schema, which the
        # description gave: read with it, whatever this call claimed.
        return self._unary_answer(codec, status, reply)

    def _claim(self, codec, args):
        """The arguments' bytes and the claim their call makes: the
        server's own schema, from its description, until the server says it
        is the same (None after that); or, where the values leave struct
        fields out, the server's schema without them, so that the server
        fills in their defaults (docs/EVOLUTION.md). Returns (body, claim,
        whether fields were left out)."""
        d = self._described
        body = bytearray()
        codec.omitted, codec.given = {}, {}
        try:
            for arg, value in zip(d["args"], args):
                codec.encode(value, arg["format"], body, "argument %r" % arg["name"])
            omitted, given = codec.omitted, codec.given
        finally:
            codec.omitted = codec.given = None
        if omitted:
            claim = _without(d["schema"], omitted, given)
        elif (self._service, d["name"]) in self._proxy._agreed:
            claim = None
        else:
            claim = (int(d["fingerprint"], 16), d["schema"].encode("utf-8"))
        return bytes(body), claim, bool(omitted)

    def _claimed(self, status, theirs, omitted):
        """Takes in the server's answer to a claim: once it says its schema
        is the server's own, later calls need not claim it."""
        own = int(self._described["fingerprint"], 16)
        if status == 0 and not omitted and (theirs is None or theirs[0] in (0, own)):
            self._proxy._agreed.add((self._service, self._described["name"]))

    def _arguments(self, args, kwargs):
        """The arguments besides a stream, in order, and the value given
        for the stream (None for a method that takes no stream)."""
        d = self._described
        stream = d.get("stream_arg")
        names = [a["name"] for a in d["args"]]
        if stream is not None:
            names.insert(stream["position"], stream["name"])
        if kwargs:
            if args:
                raise ArgumentError("give the arguments by position or by name, not both")
            missing = [n for n in names if n not in kwargs]
            if missing or len(kwargs) != len(names):
                raise ArgumentError("%s takes %s" % (d["name"], ", ".join(names)))
            args = tuple(kwargs[n] for n in names)
        if len(args) != len(names):
            raise ArgumentError("%s takes %d argument(s) (%s), %d given"
                                % (d["name"], len(names), ", ".join(names), len(args)))
        if stream is None:
            return args, None
        args = list(args)
        return args, args.pop(stream["position"])

    def _unary_answer(self, codec, status, reply):
        if status != 0:
            raise status_error(status, reply)
        fmt = self._described["returns"]["format"]
        value, end_at = codec.read(reply, 0, fmt)
        if end_at != len(reply):
            raise RpcError("%d bytes left over after the reply" % (len(reply) - end_at))
        if fmt == {"TYPENAME": "Result"}:
            (variant, payload), = value.items()
            if variant == "Err":
                raise RemoteError(payload)
            return payload
        return value

    def _stream_call(self, codec, body, items):
        """A call that sends a stream, reads one, or both."""
        d, proxy = self._described, self._proxy
        connection = proxy._connection
        reads = d["shape"] in ("server", "bidi")
        flags = (FLAG_SENDS_STREAM if items is not None else 0) | (FLAG_READS_STREAM if reads else 0)
        call_id, call = connection.start(self._service, d["name"], body, proxy._timeout, proxy._metadata, flags)
        deadline = deadline_after(proxy._timeout)
        try:
            if reads:
                connection.grant(call_id, call, WINDOW - 65536)
            sender = None
            if items is not None:
                stream = d["stream_arg"]
                sender = Sender(connection, call_id, call, codec, stream["format"], deadline,
                                "argument %r" % stream["name"])
            if not reads:
                sender.run(items)
                if sender.error is not None:
                    raise sender.error
                connection.wait(call, lambda c: c.answer is not None, deadline)
                status, reply = answer(call)
                return self._unary_answer(codec, status, reply)
            if sender is not None:
                sender.start(items)
            # The stream is open once its first items message comes; a
            # response first is an error, or the Err of a Result.
            connection.wait(call, lambda c: c.items or c.answer is not None, deadline, "stream")
            error_format = d.get("returns_error", {}).get("format")
            if not call.items:
                if sender is not None and sender.error is not None:
                    raise sender.error
                end(answer(call), codec, error_format)
            stream = Stream(connection, call_id, call, codec, d["returns"]["format"], error_format, deadline)
            stream.sender = sender
            call_id = None  # the stream forgets it when done
            return stream
        finally:
            # Not opened (an error, an interrupt): the server must stop too,
            # and a sender with it.
            if call_id is not None:
                if call.answer is None:
                    connection.cancel(call_id)
                else:
                    connection.forget(call_id)


def fingerprint(text):
    """The fingerprint of a schema's canonical text (bytes): 64-bit
    FNV-1a, 1 where that is 0 (docs/PROTOCOL.md section 12)."""
    value = 0xcbf29ce484222325
    for byte in text:
        value = ((value ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return value or 1


def _without(schema, omitted, given):
    """A claim of the schema `schema` (its text) with the struct fields
    `omitted` (by type name) taken out."""
    for name, fields in omitted.items():
        both = fields & given.get(name, set())
        if both:
            raise ArgumentError("%s: field(s) %s given in some values and left out of others; a call sends "
                                "every value of a type with the same fields" % (name, ", ".join(sorted(both))))
    parsed = json.loads(schema)
    for name, fields in omitted.items():
        container = parsed["types"][name]
        container["STRUCT"] = [f for f in container["STRUCT"] if next(iter(f)) not in fields]
    text = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return fingerprint(text), text


class Service:
    """A remote service: its methods are attributes."""

    def __init__(self, proxy, described, method=None):
        self._proxy = proxy
        self._described = described
        self.__doc__ = described.get("doc", "")
        method = method or Method
        self._methods = {m["name"]: method(proxy, described["service"], m) for m in described["methods"]}

    def __getattr__(self, name):
        try:
            return self._methods[name]
        except KeyError:
            raise AttributeError("%s has no method %r (it has %s)"
                                 % (self._described["service"], name, ", ".join(self._methods))) from None


class Described:
    """What both proxies share: the services a server described, each
    with a codec of its types, as attributes."""

    def __init__(self, connection, timeout, metadata):
        self._connection, self._timeout = connection, timeout
        self._metadata = tuple(metadata.items()) if isinstance(metadata, dict) else tuple(metadata)
        self._services = {}
        self._codecs = {}
        # Methods whose schema the server said is the one its description
        # gave: called without a claim from then on.
        self._agreed = set()

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
        return describe(self._services)


class ServerProxy(Described):
    """A server, described once when made; its services are attributes.

        proxy = rkit.ServerProxy("127.0.0.1:7878")
        proxy.Calculator.add(2, 3)
    """

    def __init__(self, address, timeout=10.0, metadata=(), ssl_context=None, server_hostname=None):
        super().__init__(Connection(address, timeout, ssl_context, server_hostname), timeout, metadata)
        try:
            for name in json.loads(self._reflect("list", b""))["services"]:
                described = json.loads(self._reflect("describe", _string(name)))
                self._services[name] = Service(self, described)
        except BaseException:
            self._connection.close()
            raise

    def _reflect(self, method, body):
        status, reply = self._connection.call("rpc.Reflection", method, body, self._timeout)
        if status != 0:
            raise status_error(status, reply)
        text, _ = Codec({}).read(reply, 0, "STR", "the description")
        return text

    def close(self):
        self._connection.close()


def describe(services):
    """The text of `ServerProxy.describe`."""
    lines = []
    for name, service in services.items():
        lines.append(name)
        for m in service._described["methods"]:
            args = ["%s: %s" % (a["name"], a["type"]) for a in m["args"]]
            stream = m.get("stream_arg")
            if stream is not None:
                args.insert(stream["position"], "%s: Streaming<%s>" % (stream["name"], stream["type"]))
            doc = m.get("doc", "").split("\n")[0]
            lines.append("  %s(%s) -> %s    %s" % (m["name"], ", ".join(args), m["returns"]["type"], doc))
    return "\n".join(lines)


def _string(text):
    out = bytearray()
    Codec({}).encode(text, "STR", out)
    return bytes(out)
