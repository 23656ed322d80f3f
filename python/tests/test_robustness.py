"""rkit where things go wrong: servers that break the protocol or go slow,
streams given up half-way, a reader interrupted, a connection closed under
waiting callers. Scripted servers speak the bytes of docs/PROTOCOL.md;
the rest runs against the example services (RKIT_ADDR)."""

import socket
import struct
import threading
import time
import unittest

import rkit
from rkit import connection
from rkit.connection import (HELLO, KIND_ITEMS, KIND_RESPONSE, FLAG_SENDS_STREAM, credit_frame, header_frame,
                             items_frame)

from test_rkit import address


def response(call_id, status, body):
    payload = struct.pack("<BBQB", KIND_RESPONSE, 0, call_id, status) + body
    return struct.pack("<I", len(payload)) + payload


def read_frame(peer, buf):
    """The next frame's payload from `peer` (bytes left over stay in
    `buf`), or None once the peer has gone."""
    while True:
        if len(buf) >= 4:
            (length,) = struct.unpack_from("<I", buf, 0)
            if len(buf) >= 4 + length:
                payload = bytes(buf[4:4 + length])
                del buf[:4 + length]
                return payload
        chunk = peer.recv(65536)
        if not chunk:
            return None
        buf += chunk


def scripted(script):
    """A server on a free port that sends its handshake, then runs
    `script(peer, buf)`; returns its address and thread."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        peer, _ = listener.accept()
        with peer, listener:
            peer.sendall(HELLO)
            buf = bytearray()
            assert len(read_frame_raw(peer, buf, 8)) == 8
            try:
                script(peer, buf)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return "127.0.0.1:%d" % listener.getsockname()[1], thread


def read_frame_raw(peer, buf, n):
    while len(buf) < n:
        chunk = peer.recv(65536)
        if not chunk:
            break
        buf += chunk
    data = bytes(buf[:n])
    del buf[:n]
    return data


class ScriptedServerTest(unittest.TestCase):
    def test_a_client_stream_stops_soon_after_an_early_answer(self):
        received = {}

        def script(peer, buf):
            read_frame(peer, buf)  # the request
            peer.sendall(credit_frame(0, 196608))  # the window rpc-core grants
            read_frame(peer, buf)  # one item
            peer.sendall(response(0, 0, b"\x07"))
            # Count what still comes for the call until the client's next
            # request (a ping it sends after the upload returned).
            count = 0
            while True:
                payload = read_frame(peer, buf)
                if payload is None or payload[0] != KIND_ITEMS:
                    break
                count += 1
            received["after"] = count

        addr, thread = scripted(script)
        conn = connection.Connection(addr, timeout=5)
        call_id, call = conn.start("Up", "load", b"", 5, (), FLAG_SENDS_STREAM)
        from rkit.codec import Codec
        from rkit.streams import Sender

        sender = Sender(conn, call_id, call, Codec({}), "U8", connection.deadline_after(5), "argument 'items'")
        sender.run(1 for _ in range(100000))
        conn.wait(call, lambda c: c.answer is not None, connection.deadline_after(5))
        self.assertEqual(connection.answer(call), (0, b"\x07"))
        conn.send(header_frame(0x05, 1))  # ends the server's count
        thread.join(10)
        conn.close()
        # Without looking before each item it sent all 16,383 its credit
        # allowed; an rpc-core server closes a connection after 10,000.
        self.assertLess(received["after"], 1000)

    def test_items_for_a_unary_call_close_the_connection(self):
        def script(peer, buf):
            read_frame(peer, buf)
            peer.sendall(items_frame(0, 1, b"\x01"))
            read_frame(peer, buf)

        addr, thread = scripted(script)
        conn = connection.Connection(addr, timeout=5)
        with self.assertRaisesRegex(rkit.ConnectionClosed, "reads no stream"):
            conn.call("Calculator", "total", b"", timeout=5)
        conn.close()
        thread.join(10)

    def test_a_trickling_server_cannot_hold_a_call_past_its_deadline(self):
        def script(peer, buf):
            read_frame(peer, buf)
            for byte in response(0, 0, b"\x0a"):
                peer.sendall(bytes([byte]))
                time.sleep(0.5)

        addr, thread = scripted(script)
        conn = connection.Connection(addr, timeout=5)
        started = time.monotonic()
        with self.assertRaises(rkit.DeadlineExceeded):
            conn.call("Calculator", "total", b"", timeout=0.2)
        # A bound against hanging (the frame takes 6 s to trickle in).
        self.assertLess(time.monotonic() - started, 5)
        conn.close()
        thread.join(10)

    def test_a_server_flooding_pings_cannot_hold_a_call_past_its_deadline(self):
        def script(peer, buf):
            read_frame(peer, buf)
            # Takes the client's pongs in, so that its sends never block.
            threading.Thread(target=lambda: [None for _ in iter(lambda: peer.recv(65536), b"")],
                             daemon=True).start()
            ping = header_frame(0x05, 9)
            end = time.monotonic() + 6
            while time.monotonic() < end:
                peer.sendall(ping * 50)

        addr, thread = scripted(script)
        conn = connection.Connection(addr, timeout=5)
        started = time.monotonic()
        with self.assertRaises(rkit.DeadlineExceeded):
            conn.call("Calculator", "total", b"", timeout=0.2)
        self.assertLess(time.monotonic() - started, 5)  # the flood lasts 6 s
        conn.close()
        thread.join(10)

    def test_close_wakes_a_caller_waiting_without_a_deadline(self):
        def script(peer, buf):
            read_frame(peer, buf)
            read_frame(peer, buf)  # silent until the client goes

        addr, thread = scripted(script)
        conn = connection.Connection(addr, timeout=5)
        failures = []

        def wait_forever():
            try:
                conn.call("Calculator", "total", b"", timeout=None)
            except rkit.ConnectionClosed as e:
                failures.append(e)

        caller = threading.Thread(target=wait_forever)
        caller.start()
        while not conn._reading:  # the caller is reading: now close under it
            time.sleep(0.01)
        conn.close()
        caller.join(10)
        self.assertFalse(caller.is_alive())
        self.assertEqual(len(failures), 1)
        thread.join(10)


class GivingUpTest(unittest.TestCase):
    def setUp(self):
        self.proxy = rkit.ServerProxy(address())

    def tearDown(self):
        self.proxy.close()

    def test_closing_a_bidi_stream_stops_its_sender(self):
        lines = ("line %d" % i for i in range(10**7))
        echoed = self.proxy.Market.echo(lines)
        self.assertEqual(next(echoed), "LINE 0")
        echoed.close()
        echoed.sender.thread.join(10)
        self.assertFalse(echoed.sender.thread.is_alive())
        # The sender sent nothing for the cancelled call that could make
        # the server close the connection.
        for _ in range(50):
            self.assertEqual(self.proxy.Market.price("ACME"), 100.0)

    def test_a_stream_collected_while_its_connection_is_locked_does_not_deadlock(self):
        ticks = self.proxy.Market.ticks("ACME", 10**9)
        next(ticks)
        conn = self.proxy._connection
        # The garbage collector may run `__del__` on a thread that holds
        # the connection's locks, inside `start`.
        with conn._write, conn._lock:
            collector = threading.Thread(target=ticks.__del__)
            collector.start()
            collector.join(5)
            stuck = collector.is_alive()
        self.assertFalse(stuck)
        # The cancel goes out with the next request; the call is forgotten.
        self.assertEqual(self.proxy.Calculator.add(1, 2), 3)
        self.assertNotIn(ticks._id, conn._calls)

    def test_an_interrupted_reader_leaves_the_connection_usable(self):
        conn = self.proxy._connection
        real = conn._read_frames

        def interrupted(deadline):
            conn._read_frames = real
            raise KeyboardInterrupt

        conn._read_frames = interrupted
        with self.assertRaises(KeyboardInterrupt):
            self.proxy.Calculator.add(1, 2)
        self.assertEqual(self.proxy.Calculator.add(1, 2), 3)

    def test_an_argument_over_the_frame_limit_fails_locally(self):
        with self.assertRaisesRegex(rkit.ArgumentError, "over the frame limit"):
            self.proxy.SeedObjects.send_obj("x" * (17 * 1024 * 1024))
        with self.assertRaisesRegex(rkit.ArgumentError, r"argument 'chunks'\[0\] is .* over the frame limit"):
            self.proxy.Market.upload("big", [b"x" * (17 * 1024 * 1024)])
        self.assertEqual(self.proxy.Calculator.add(1, 2), 3)


if __name__ == "__main__":
    unittest.main()
