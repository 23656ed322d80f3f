"""The Python client against two versions of one service (tests/src/evolving.rs
in the Rust tests, whose tests/python_cross_version.rs runs this file with
RKIT_V1_ADDR and RKIT_V2_ADDR set): values shaped for one version sent to
the other, under the rules of docs/EVOLUTION.md."""

import asyncio
import json
import os
import unittest

import rkit
import rkit.aio
from rkit.proxy import fingerprint


class CrossVersion(unittest.TestCase):
    def setUp(self):
        self.v1 = rkit.ServerProxy(os.environ["RKIT_V1_ADDR"])
        self.v2 = rkit.ServerProxy(os.environ["RKIT_V2_ADDR"])

    def tearDown(self):
        self.v1.close()
        self.v2.close()

    def test_the_fingerprints_python_computes_are_the_servers(self):
        for proxy in (self.v1, self.v2):
            for method in proxy._services["Profiles"]._described["methods"]:
                text = method["schema"]
                self.assertEqual("%016x" % fingerprint(text.encode()), method["fingerprint"], method["name"])
                # The canonical text is compact JSON in the order given.
                self.assertEqual(json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False), text)

    def test_values_shaped_for_v1_reach_v2(self):
        # The field v2 added is left out: the server takes its default.
        self.assertEqual(self.v2.Profiles.register({"name": "ann"}), "ann <none>")
        self.assertEqual(self.v2.Profiles.items([{"label": "a"}], {"label": "b"}),
                         [{"label": "a", "count": 1}, {"label": "b", "count": 1}])
        # Given for one item and not another: one call has one schema.
        with self.assertRaises(rkit.ArgumentError):
            self.v2.Profiles.items([{"label": "a"}, {"label": "b", "count": 2}], None)
        # Replies are read with the server's own types.
        self.assertEqual(self.v2.Profiles.lookup("ann"), {"name": "ann", "since": 2019, "karma": 42})

    def test_values_shaped_for_v2_reach_v1(self):
        # A field v1 does not have is not sent.
        self.assertEqual(self.v1.Profiles.register({"name": "bo", "email": "bo@example.com"}), "bo")
        self.assertEqual(self.v1.Profiles.lookup("bo"), {"name": "bo", "since": 2019})
        # A variant v1 does not have is refused before it is sent.
        with self.assertRaises(rkit.ArgumentError):
            self.v1.Profiles.paint("Blue")
        self.assertEqual(self.v1.Profiles.paint("Green"), "Green")

    def test_a_field_without_a_default_is_a_schema_mismatch(self):
        with self.assertRaises(rkit.SchemaMismatch) as caught:
            self.v2.Profiles.order({"id": 1})
        message = str(caught.exception)
        self.assertIn("`Order`", message)
        self.assertIn("`quantity`", message)
        # The connection stays up.
        self.assertEqual(self.v2.Profiles.order({"id": 1, "quantity": 2}), 3)

    def test_agreeing_calls_claim_once(self):
        self.assertEqual(self.v2.Profiles.add(2, 3), 5)
        self.assertIn(("Profiles", "add"), self.v2._agreed)
        self.assertEqual(self.v2.Profiles.add(-2, 3), 1)


class CrossVersionAio(unittest.TestCase):
    """The asyncio client follows the same rules."""

    def test_the_same_cases_awaited(self):
        async def run():
            v1 = await rkit.aio.connect(os.environ["RKIT_V1_ADDR"])
            v2 = await rkit.aio.connect(os.environ["RKIT_V2_ADDR"])
            try:
                self.assertEqual(await v2.Profiles.register({"name": "ann"}), "ann <none>")
                self.assertEqual(await v1.Profiles.register({"name": "bo", "email": "bo@example.com"}), "bo")
                self.assertEqual(await v2.Profiles.lookup("ann"), {"name": "ann", "since": 2019, "karma": 42})
                with self.assertRaises(rkit.SchemaMismatch) as caught:
                    await v2.Profiles.order({"id": 1})
                self.assertIn("`quantity`", str(caught.exception))
                self.assertEqual(await v2.Profiles.order({"id": 1, "quantity": 2}), 3)
                # Claimed until the server agrees, then not.
                self.assertEqual(await v2.Profiles.add(2, 3), 5)
                self.assertIn(("Profiles", "add"), v2._agreed)
                self.assertEqual(await v2.Profiles.add(-2, 3), 1)
            finally:
                await v1.close()
                await v2.close()

        asyncio.run(run())


if __name__ == "__main__":
    unittest.main()
