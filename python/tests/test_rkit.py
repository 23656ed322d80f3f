"""rkit against a real server: the Rust harness (rpc-examples/tests/python.rs)
starts the example services and passes their address in RKIT_ADDR."""

import os
import threading
import unittest

import rkit


def address():
    addr = os.environ.get("RKIT_ADDR")
    if not addr:
        raise unittest.SkipTest("RKIT_ADDR is not set: run through `cargo test -p rpc-examples --test python`")
    return addr


class ServerProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proxy = rkit.ServerProxy(address())

    @classmethod
    def tearDownClass(cls):
        cls.proxy.close()

    def test_calls_read_like_local_ones(self):
        self.assertEqual(self.proxy.Calculator.add(2, 3), 5)
        self.assertEqual(self.proxy.Calculator.add(a=-7, b=2), -5)
        self.assertEqual(self.proxy.Calculator.add(2**62, 2**62 - 1 + 2**62 - 2**62), 2**63 - 1)
        self.assertEqual(self.proxy.SeedObjects.get_obj(), "lxx nb")
        self.assertIsNone(self.proxy.SeedObjects.send_obj("lxx nb"))

    def test_a_result_is_its_ok_or_a_remote_error(self):
        self.assertEqual(self.proxy.Calculator.div(84, 2), 42)
        with self.assertRaises(rkit.RemoteError) as caught:
            self.proxy.Calculator.div(1, 0)
        self.assertEqual(caught.exception.value, "DivByZero")

    def test_bad_arguments_fail_locally_naming_the_argument(self):
        with self.assertRaisesRegex(rkit.ArgumentError, "argument 'b': expected i64, found 'x'"):
            self.proxy.Calculator.add(2, "x")
        with self.assertRaisesRegex(rkit.ArgumentError, "expected i64"):
            self.proxy.Calculator.add(2, 2**63)
        with self.assertRaisesRegex(rkit.ArgumentError, "takes 2 argument"):
            self.proxy.Calculator.add(2)
        with self.assertRaisesRegex(AttributeError, "has no method 'nope'"):
            self.proxy.Calculator.nope
        with self.assertRaisesRegex(AttributeError, "no service 'Nope'"):
            self.proxy.Nope

    def test_describe_lists_every_method(self):
        text = self.proxy.describe()
        self.assertIn("add(a: i64, b: i64) -> i64    Adds two numbers.", text)
        self.assertIn("get_obj() -> String", text)

    def test_many_threads_share_one_connection(self):
        errors = []

        def work(t):
            try:
                for i in range(50):
                    if self.proxy.Calculator.add(t, i) != t + i:
                        errors.append((t, i))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])

    def test_statuses_are_exceptions_of_their_own(self):
        connection = self.proxy._connection
        status, body = connection.call("Calculator", "nope", b"")
        error = rkit.errors.status_error(status, body)
        self.assertIsInstance(error, rkit.UnknownMethod)
        self.assertEqual(error.code, 2)
        status, body = connection.call("Calculator", "add", b"\x04")
        self.assertIsInstance(rkit.errors.status_error(status, body), rkit.BadRequest)


if __name__ == "__main__":
    unittest.main()
