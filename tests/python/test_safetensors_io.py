"""Tests of masknet_tools.safetensors_io."""

import json
import os
import struct
import tempfile
import unittest

import numpy as np

from masknet_tools import safetensors_io


def _bf16(value):
    return int(
        safetensors_io.float32_to_bf16_bits(np.array([value], np.float32))[0])


class Bf16RoundingTest(unittest.TestCase):

    def test_exact_values_are_kept(self):
        self.assertEqual(_bf16(1.0), 0x3F80)
        self.assertEqual(_bf16(-2.0), 0xC000)
        self.assertEqual(_bf16(0.0), 0x0000)

    def test_halfway_rounds_to_even(self):
        # 1 + 2^-8 lies halfway between 1 (even) and 1 + 2^-7 (odd): down.
        self.assertEqual(_bf16(1 + 2**-8), 0x3F80)
        # 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6
        # (even): up.
        self.assertEqual(_bf16(1 + 3 * 2**-8), 0x3F82)

    def test_above_halfway_rounds_up_and_below_rounds_down(self):
        self.assertEqual(_bf16(1 + 2**-8 + 2**-20), 0x3F81)
        self.assertEqual(_bf16(1 + 2**-8 - 2**-20), 0x3F80)
        self.assertEqual(_bf16(-(1 + 2**-8 + 2**-20)), 0xBF81)

    def test_overflow_rounds_to_infinity_and_nan_stays_nan(self):
        self.assertEqual(_bf16(np.finfo(np.float32).max), 0x7F80)
        self.assertEqual(_bf16(np.inf), 0x7F80)
        self.assertTrue(
            np.isnan(safetensors_io.bf16_bits_to_float32([_bf16(np.nan)])[0]))

    def test_widening_is_exact(self):
        self.assertEqual(
            safetensors_io.bf16_bits_to_float32([0x3F82])[0], 1 + 2**-6)


class FileTest(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.directory.name, "weights.safetensors")

    def tearDown(self):
        self.directory.cleanup()

    def test_f32_round_trip_is_exact(self):
        rng = np.random.default_rng(0)
        tensors = {
            "b.weight": rng.normal(size=(3, 5)).astype(np.float32),
            "a.bias": rng.normal(size=7).astype(np.float32),
            "empty": np.zeros((0, 4), np.float32)
        }
        safetensors_io.write(self.path, tensors)
        read = safetensors_io.read(self.path)
        self.assertEqual(sorted(read), sorted(tensors))
        for name, values in tensors.items():
            np.testing.assert_array_equal(read[name], values)
            self.assertEqual(read[name].dtype, np.float32)

    def test_bf16_round_trip_gives_the_rounded_values(self):
        values = np.array([1 + 2**-8, 1 + 3 * 2**-8, -3.14159, 1e-3],
                          np.float32)
        safetensors_io.write(self.path, {"t": values}, dtype="BF16")
        read = safetensors_io.read(self.path)["t"]
        np.testing.assert_array_equal(
            read,
            safetensors_io.bf16_bits_to_float32(
                safetensors_io.float32_to_bf16_bits(values)))
        self.assertEqual(read[0], 1.0)
        self.assertEqual(read[1], 1 + 2**-6)

    def test_layout_is_safetensors(self):
        safetensors_io.write(self.path, {"x": np.array([1.0, 2.0], np.float32)},
                             dtype="BF16")
        with open(self.path, "rb") as f:
            content = f.read()
        (length,) = struct.unpack("<Q", content[:8])
        self.assertEqual(length % 8, 0)
        header = json.loads(content[8:8 + length])
        self.assertEqual(
            header,
            {"x": {
                "dtype": "BF16",
                "shape": [2],
                "data_offsets": [0, 4]
            }})
        self.assertEqual(content[8 + length:],
                         struct.pack("<HH", 0x3F80, 0x4000))

    def _write_raw(self, header, data):
        header_bytes = json.dumps(header).encode()
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(header_bytes)) + header_bytes + data)

    def test_read_rejects_overlapping_tensors(self):
        self._write_raw(
            {
                "a": {
                    "dtype": "F32",
                    "shape": [2],
                    "data_offsets": [0, 8]
                },
                "b": {
                    "dtype": "F32",
                    "shape": [2],
                    "data_offsets": [4, 12]
                }
            }, bytes(12))
        with self.assertRaisesRegex(ValueError, "overlap"):
            safetensors_io.read(self.path)

    def test_read_rejects_data_outside_the_file(self):
        self._write_raw(
            {"a": {
                "dtype": "F32",
                "shape": [4],
                "data_offsets": [0, 16]
            }}, bytes(8))
        with self.assertRaisesRegex(ValueError, "data_offsets"):
            safetensors_io.read(self.path)

    def test_read_rejects_other_dtypes(self):
        self._write_raw(
            {"a": {
                "dtype": "F16",
                "shape": [1],
                "data_offsets": [0, 2]
            }}, bytes(2))
        with self.assertRaisesRegex(ValueError, "dtype"):
            safetensors_io.read(self.path)


if __name__ == "__main__":
    unittest.main()
