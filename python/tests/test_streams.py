"""Streams of all three shapes from rkit, against the example `Market`
service that the Rust harness (rpc-examples/tests/python.rs) serves."""

import unittest

import rkit
from rkit.streams import WINDOW

from test_rkit import address


class StreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proxy = rkit.ServerProxy(address())
        cls.market = cls.proxy.Market

    @classmethod
    def tearDownClass(cls):
        cls.proxy.close()

    def test_a_server_stream_is_an_iterator(self):
        ticks = list(self.market.ticks("ACME", 3))
        self.assertEqual([t["seq"] for t in ticks], [0, 1, 2])
        self.assertEqual(ticks[1], {"symbol": "ACME", "seq": 1, "price": 100.25})
        self.assertEqual(list(self.market.ticks("ACME", 0)), [])

    def test_a_long_stream_keeps_flowing_as_it_is_read(self):
        # 100,000 ticks are megabytes: far past the first window, so this
        # ends only if reading grants the server more credit.
        self.assertEqual(sum(1 for _ in self.market.ticks("ACME", 100000)), 100000)

    def test_a_stream_that_fails_before_it_starts_raises_at_the_call(self):
        with self.assertRaises(rkit.RemoteError) as caught:
            self.market.history("NOPE")
        self.assertEqual(caught.exception.value, {"UnknownSymbol": "NOPE"})
        self.assertEqual([t["seq"] for t in self.market.history("ACME")], [0, 1, 2])

    def test_a_client_stream_is_any_iterable(self):
        chunks = (bytes([i]) * 65536 for i in range(256))  # 16 MiB, within credit
        self.assertEqual(self.market.upload("data.bin", chunks), 16 * 1024 * 1024)
        self.assertEqual(self.market.upload(chunks=[b"ab", b"c"], name="x"), 3)
        self.assertEqual(self.market.upload("empty", []), 0)
        self.assertEqual(self.market.price("ACME"), 100.0)  # the connection is still up

    def test_bidi_streams_run_both_ways(self):
        self.assertEqual(list(self.market.echo(["hello", "world"])), ["HELLO", "WORLD"])
        self.assertEqual(list(self.market.echo(iter([]))), [])
        lines = ("line %d" % i for i in range(5000))
        self.assertEqual(sum(1 for _ in self.market.echo(lines)), 5000)

    def test_closing_a_stream_early_cancels_it(self):
        with self.market.ticks("ACME", 10**9) as ticks:
            self.assertEqual(next(ticks)["seq"], 0)
        self.assertEqual(list(ticks), [])
        self.assertEqual(self.market.price("ACME"), 100.0)

    def test_a_slow_reader_holds_at_most_its_window(self):
        ticks = self.market.ticks("ACME", 10**9)
        next(ticks)
        # Other calls read the socket, and so take in what the server sends
        # the unread stream meanwhile: never more than was granted.
        for _ in range(200):
            self.proxy.Calculator.add(1, 2)
        held = sum(len(message) for message, _ in ticks._call.items)
        self.assertLessEqual(held, WINDOW + 65536)
        ticks.close()

    def test_a_bad_item_fails_locally_naming_the_argument(self):
        with self.assertRaisesRegex(rkit.ArgumentError, r"argument 'chunks'\[1\]: expected bytes, found 5"):
            self.market.upload("x", [b"a", 5])
        with self.assertRaisesRegex(rkit.ArgumentError, "expected an iterable"):
            self.market.upload("x", 5)
        with self.assertRaisesRegex(rkit.ArgumentError, r"argument 'input'\[0\]: expected a str"):
            list(self.market.echo([1]))
        self.assertEqual(self.market.price("ACME"), 100.0)

    def test_an_iterable_that_raises_fails_the_call(self):
        def lines():
            yield "one"
            raise ValueError("the file went away")

        with self.assertRaisesRegex(ValueError, "the file went away"):
            list(self.market.echo(lines()))
        self.assertEqual(list(self.market.echo(["again"])), ["AGAIN"])

    def test_a_deadline_ends_a_stream(self):
        proxy = rkit.ServerProxy(address(), timeout=0.3)
        try:
            with self.assertRaises(rkit.DeadlineExceeded):
                for _ in proxy.Market.ticks("ACME", 10**9):
                    pass
            self.assertEqual(proxy.Calculator.add(1, 2), 3)
        finally:
            proxy.close()

    def test_describe_shows_stream_arguments(self):
        self.assertIn("upload(name: String, chunks: Streaming<Vec<u8>>) -> u64", self.proxy.describe())


if __name__ == "__main__":
    unittest.main()
