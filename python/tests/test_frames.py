"""rkit's frames against conformance/frames.json, which the Rust toolkit's
own encoders make and its decoder reads (rpc-core/src/conformance.rs):
every frame a client sends is built here byte for byte, and every frame a
server sends is read here into the same fields."""

import json
import os
import socket
import struct
import threading
import unittest

import rkit
from rkit import connection
from rkit.connection import (HELLO, KIND_CANCEL, KIND_CREDIT, KIND_DRAIN, KIND_END, KIND_ITEMS, KIND_PING,
                             KIND_PONG, KIND_RESPONSE, KIND_STOP, credit_frame, header_frame, items_frame,
                             read_message, request_frame)

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = {"cancel": KIND_CANCEL, "ping": KIND_PING, "pong": KIND_PONG, "drain": KIND_DRAIN, "end": KIND_END,
         "stop": KIND_STOP, "credit": KIND_CREDIT, "items": KIND_ITEMS, "response": KIND_RESPONSE}


def load():
    with open(os.path.join(HERE, "..", "..", "conformance", "frames.json"), encoding="utf-8") as f:
        return json.load(f)


def build(m):
    """The frame rkit sends for the message `m`."""
    if m["kind"] == "request":
        schema = m.get("schema")
        if schema is not None:
            schema = (int(schema["fingerprint"], 16), schema["text"].encode("utf-8"))
        return request_frame(m["id"], m["service"], m["method"], bytes.fromhex(m["body"]), m["deadline_us"],
                             [tuple(pair) for pair in m["metadata"]], m["streams"], schema)
    if m["kind"] == "credit":
        return credit_frame(m["id"], m["bytes"])
    if m["kind"] == "items":
        return items_frame(m["id"], m["count"], bytes.fromhex(m["items"]))
    return header_frame(KINDS[m["kind"]], m["id"])


class FramesTest(unittest.TestCase):
    def setUp(self):
        self.file = load()

    def test_the_client_handshake_is_the_vector(self):
        self.assertEqual(HELLO.hex(), self.file["handshakes"][0]["hex"])

    def test_every_frame_a_client_sends_is_built_byte_for_byte(self):
        sent = [f for f in self.file["frames"] if f["direction"] == "client to server"]
        self.assertGreaterEqual(len(sent), 12)
        for frame in sent:
            with self.subTest(frame["name"]):
                self.assertEqual(build(frame["message"]).hex(), frame["hex"])

    def test_every_frame_a_server_sends_is_read_into_its_fields(self):
        received = [f for f in self.file["frames"] if f["direction"] == "server to client"]
        self.assertGreaterEqual(len(received), 20)
        for frame in received:
            with self.subTest(frame["name"]):
                m = frame["message"]
                data = bytes.fromhex(frame["hex"])
                (length,) = struct.unpack_from("<I", data, 0)
                self.assertEqual(length, len(data) - 4)
                kind, ident, fields = read_message(data[4:])
                self.assertEqual((kind, ident), (KINDS[m["kind"]], m["id"]))
                if m["kind"] == "response":
                    self.assertEqual((fields[0], bytes(fields[1]).hex()), (m["status"], m["body"]))
                    schema = m.get("schema")
                    if schema is None:
                        self.assertIsNone(fields[2])
                    else:
                        self.assertEqual(fields[2], (int(schema["fingerprint"], 16), schema["text"].encode("utf-8")))
                elif m["kind"] == "items":
                    payload, pos = fields
                    (count,) = struct.unpack_from("<I", payload, pos)
                    self.assertEqual((count, payload[pos + 4:].hex()), (m["count"], m["items"]))
                elif m["kind"] == "credit":
                    self.assertEqual(fields, m["bytes"])

    def test_every_status_has_a_frame_and_an_exception(self):
        from rkit.errors import _BY_CODE, status_error

        statuses = {f["message"]["status"] for f in self.file["frames"] if f["message"]["kind"] == "response"}
        self.assertEqual(statuses, set(range(0, 12)))
        for code in range(1, 11):
            self.assertIs(type(status_error(code, b"x")), _BY_CODE[code])
        self.assertIs(type(status_error(200, b"x")), connection.RpcError)


class DrainTest(unittest.TestCase):
    def test_a_drain_fails_the_calls_it_did_not_read_and_answers_the_rest(self):
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def server():
            # Reads the handshake and two requests, answers the first, then
            # says it read nothing from id 1 on: a server shutting down.
            peer, _ = listener.accept()
            with peer:
                peer.sendall(HELLO)
                got = b""
                while got.count(b"Calculator") < 2:
                    got += peer.recv(4096)
                peer.sendall(header_frame(KIND_DRAIN, 1))
                reply = struct.pack("<BBQB", KIND_RESPONSE, 0, 0, 0) + b"\x0a"
                peer.sendall(struct.pack("<I", len(reply)) + reply)
                peer.recv(1)  # until the client goes

        thread = threading.Thread(target=server)
        thread.start()
        conn = connection.Connection("127.0.0.1:%d" % port, timeout=5)
        first = conn.start("Calculator", "add", b"\x04\x06")
        second = conn.start("Calculator", "add", b"\x04\x06")
        conn.wait(second[1], lambda c: c.answer is not None, connection.deadline_after(2))
        with self.assertRaisesRegex(connection.ConnectionClosed, "did not run"):
            connection.answer(second[1])
        conn.wait(first[1], lambda c: c.answer is not None, connection.deadline_after(2))
        self.assertEqual(connection.answer(first[1]), (0, b"\x0a"))
        with self.assertRaisesRegex(connection.ConnectionClosed, "shutting down"):
            conn.start("Calculator", "add", b"")
        conn.close()
        thread.join()
        listener.close()


def scripted(reply):
    """A server on a free port that sends its handshake, reads one request,
    and sends the bytes `reply`; returns its address and thread."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        peer, _ = listener.accept()
        with peer, listener:
            peer.sendall(HELLO)
            peer.recv(4096)
            peer.sendall(reply)
            peer.recv(1)  # until the client goes

    thread = threading.Thread(target=serve)
    thread.start()
    return "127.0.0.1:%d" % listener.getsockname()[1], thread


class HostileServerTest(unittest.TestCase):
    def test_a_frame_over_the_limit_closes_the_connection_at_once(self):
        addr, thread = scripted(struct.pack("<I", 0xFFFFFFF0) + b"\x02")
        conn = connection.Connection(addr, timeout=5)
        with self.assertRaisesRegex(connection.ConnectionClosed, "over the limit of 16777216"):
            conn.call("Calculator", "add", b"", timeout=5)
        conn.close()
        thread.join()

    def test_a_reply_that_does_not_decode_is_an_rpc_error(self):
        from rkit.codec import Codec

        reply = struct.pack("<BBQB", KIND_RESPONSE, 0, 0, 0) + b"\x05ab"  # a string of 5 bytes holding 2
        addr, thread = scripted(struct.pack("<I", len(reply)) + reply)
        conn = connection.Connection(addr, timeout=5)
        status, body = conn.call("SeedObjects", "get_obj", b"", timeout=5)
        with self.assertRaisesRegex(rkit.DecodeError, "the reply does not decode"):
            Codec({}).read(body, 0, "STR")
        with self.assertRaises(rkit.RpcError):
            Codec({}).read(b"\xff", 0, "U64")
        conn.close()
        thread.join()


if __name__ == "__main__":
    unittest.main()
