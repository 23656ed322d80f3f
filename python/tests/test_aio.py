"""rkit.aio against the example services the Rust harness serves: unary
calls, results, errors, streams of every shape, and many tasks on one
connection."""

import asyncio
import unittest

import rkit
import rkit.aio
from rkit.streams import WINDOW

from test_rkit import address


class AioTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.proxy = await rkit.aio.connect(address())

    async def asyncTearDown(self):
        await self.proxy.close()

    async def test_calls_read_like_local_ones(self):
        self.assertEqual(await self.proxy.Calculator.add(2, 3), 5)
        self.assertEqual(await self.proxy.Calculator.add(a=-7, b=2), -5)
        self.assertEqual(await self.proxy.SeedObjects.get_obj(), "lxx nb")
        self.assertEqual(await self.proxy.Calculator.div(84, 2), 42)
        with self.assertRaises(rkit.RemoteError) as caught:
            await self.proxy.Calculator.div(1, 0)
        self.assertEqual(caught.exception.value, "DivByZero")
        with self.assertRaisesRegex(rkit.ArgumentError, "argument 'b': expected i64"):
            await self.proxy.Calculator.add(2, "x")
        self.assertIn("add(a: i64, b: i64) -> i64", self.proxy.describe())

    async def test_many_tasks_share_one_connection(self):
        sums = await asyncio.gather(*(self.proxy.Calculator.add(i, i) for i in range(500)))
        self.assertEqual(sums, [2 * i for i in range(500)])

    async def test_server_streams_are_async_iterators(self):
        ticks = [t["seq"] async for t in await self.proxy.Market.ticks("ACME", 3)]
        self.assertEqual(ticks, [0, 1, 2])
        count = 0
        async for _ in await self.proxy.Market.ticks("ACME", 50000):  # past the first window
            count += 1
        self.assertEqual(count, 50000)
        with self.assertRaises(rkit.RemoteError):
            await self.proxy.Market.history("NOPE")

    async def test_client_streams_take_iterables_and_async_iterables(self):
        self.assertEqual(await self.proxy.Market.upload("f", [b"ab", b"c"]), 3)

        async def chunks():
            for i in range(64):
                yield bytes([i]) * 65536

        self.assertEqual(await self.proxy.Market.upload("big", chunks()), 64 * 65536)
        with self.assertRaisesRegex(rkit.ArgumentError, r"argument 'chunks'\[1\]: expected bytes"):
            await self.proxy.Market.upload("x", [b"a", 5])
        self.assertEqual(await self.proxy.Market.price("ACME"), 100.0)

    async def test_bidi_and_closing_early(self):
        echoed = [line async for line in await self.proxy.Market.echo(["hello", "world"])]
        self.assertEqual(echoed, ["HELLO", "WORLD"])
        async with await self.proxy.Market.ticks("ACME", 10**9) as ticks:
            first = await ticks.__anext__()
            self.assertEqual(first["seq"], 0)
            # Other calls go on while the stream waits unread; it holds no
            # more than its window.
            for _ in range(100):
                await self.proxy.Calculator.add(1, 1)
            held = sum(len(m) for m, _ in ticks._call.items)
            self.assertLessEqual(held, WINDOW + 65536)
        self.assertEqual(await self.proxy.Market.price("ACME"), 100.0)

    async def test_an_iterable_that_raises_fails_the_call(self):
        async def lines():
            yield "one"
            raise ValueError("the file went away")

        with self.assertRaisesRegex(ValueError, "the file went away"):
            [line async for line in await self.proxy.Market.echo(lines())]
        self.assertEqual([x async for x in await self.proxy.Market.echo(["again"])], ["AGAIN"])

    async def test_a_deadline_ends_a_stream(self):
        proxy = await rkit.aio.connect(address(), timeout=0.3)
        try:
            with self.assertRaises(rkit.DeadlineExceeded):
                async for _ in await proxy.Market.ticks("ACME", 10**9):
                    pass
            self.assertEqual(await proxy.Calculator.add(1, 2), 3)
        finally:
            await proxy.close()


if __name__ == "__main__":
    unittest.main()
