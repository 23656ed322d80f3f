"""rkit's codec against conformance/vectors.json, the bytes the Rust codec
makes (tests/tests/conformance.rs checks the file against it)."""

import json
import os
import unittest

from rkit.codec import Codec

VECTORS = os.path.join(os.path.dirname(__file__), "..", "..", "conformance", "vectors.json")


def as_json(value):
    """A decoded value in the vectors' JSON shapes."""
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


def as_python(value, fmt):
    """A vector's JSON value as rkit takes it: bytes for BYTES."""
    if fmt == "BYTES":
        return bytes(value)
    return value


class ConformanceTest(unittest.TestCase):
    def test_every_vector_encodes_and_decodes_to_the_same_bytes_and_value(self):
        with open(VECTORS, encoding="utf-8") as f:
            vectors = json.load(f)
        self.assertGreaterEqual(len(vectors), 60)
        for v in vectors:
            with self.subTest(v["name"]):
                codec = Codec(v["types"])
                out = bytearray()
                codec.encode(as_python(v["value"], v["format"]), v["format"], out)
                self.assertEqual(out.hex(), v["hex"])
                decoded, end = codec.decode(bytes.fromhex(v["hex"]), 0, v["format"])
                self.assertEqual(end, len(v["hex"]) // 2)
                self.assertEqual(as_json(decoded), v["value"])


if __name__ == "__main__":
    unittest.main()
