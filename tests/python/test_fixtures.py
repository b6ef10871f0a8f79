"""Checks the committed parity fixtures and demo model against the reference.

Regenerate with tools/write_fixtures.py and tools/train_demo_model.py.
"""

import json
import os
import struct
import tempfile
import unittest

import numpy as np
import torch

from masknet_tools import export
from masknet_tools import fixtures
from masknet_tools import protos
from masknet_tools import synthetic
from masknet_tools import train

FIXTURES_ROOT = os.path.join(protos.REPO_ROOT, "tests", "fixtures")
DEMO_VERSION_DIR = os.path.join(protos.REPO_ROOT, "models", train.MODEL_NAME,
                                "1")


def _version_dir(name):
    return os.path.join(FIXTURES_ROOT, name, "models", name,
                        str(fixtures.VERSION))


def _weight_dtypes(version_dir):
    with open(os.path.join(version_dir, export.WEIGHTS_FILE), "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return {
        entry["dtype"]
        for name, entry in header.items()
        if name != "__metadata__"
    }


class ParityFixtureTest(unittest.TestCase):

    def test_expected_scores_are_the_references(self):
        for name in fixtures.FIXTURE_NAMES:
            with self.subTest(name):
                model = export.load_reference(_version_dir(name))
                for case in fixtures.read_fixture(
                        os.path.join(FIXTURES_ROOT, name)).cases:
                    response, _, _ = fixtures.expected_response(
                        model, case.request)
                    self.assertEqual(response.tasks, case.expected.tasks)
                    self.assertEqual([c.id for c in response.candidates],
                                     [c.id for c in case.expected.candidates])
                    np.testing.assert_allclose(
                        [list(c.scores) for c in response.candidates],
                        [list(c.scores) for c in case.expected.candidates],
                        atol=1e-6)

    def test_cases_address_their_model_with_distinct_candidates(self):
        for name in fixtures.FIXTURE_NAMES:
            with self.subTest(name):
                cases = fixtures.read_fixture(os.path.join(FIXTURES_ROOT,
                                                           name)).cases
                self.assertEqual([len(c.request.candidates) for c in cases],
                                 [1, 7, fixtures.many_candidates(name), 0])
                for case in cases:
                    self.assertEqual(
                        (case.request.model_name, case.request.model_version),
                        (name, fixtures.VERSION))
                    self.assertEqual(
                        (case.expected.model_name, case.expected.model_version),
                        (name, fixtures.VERSION))
                    ids = [c.id for c in case.request.candidates]
                    self.assertEqual(len(set(ids)), len(ids))

    def test_paper_models_are_stored_in_bf16_and_the_others_in_f32(self):
        for name in fixtures.FIXTURE_NAMES:
            with self.subTest(name):
                expected = "BF16" if name in fixtures.BF16_FIXTURES else "F32"
                self.assertEqual(_weight_dtypes(_version_dir(name)), {expected})

    def test_the_writer_reproduces_the_committed_bytes(self):
        with tempfile.TemporaryDirectory() as root:
            for name in fixtures.FIXTURE_NAMES:
                with self.subTest(name):
                    fixtures.write_fixture(name, root)
                    for relative in (fixtures.CASES_FILE,
                                     os.path.join("models", name, "1",
                                                  export.CONFIG_FILE),
                                     os.path.join("models", name, "1",
                                                  export.WEIGHTS_FILE)):
                        with open(os.path.join(root, name, relative),
                                  "rb") as f:
                            written = f.read()
                        with open(os.path.join(FIXTURES_ROOT, name, relative),
                                  "rb") as f:
                            self.assertEqual(written, f.read(), relative)


class DemoModelTest(unittest.TestCase):

    def test_the_demo_model_ranks_its_held_out_data_well(self):
        # Evaluates the exported weights on the held-out requests, drawn
        # again from the seed the metadata records; the figures the trainer
        # wrote must be what the model scores.
        model_config, _ = export.load_model(DEMO_VERSION_DIR)
        options = train.TrainingOptions()
        self.assertEqual(model_config.metadata["seed"], str(options.seed))
        data = synthetic.generate(options.data)
        _, heldout_rows = train.heldout_split(options, data)
        model = export.load_reference(DEMO_VERSION_DIR, dtype=torch.float32)
        aucs = train.heldout_auc(model, data, heldout_rows)
        for task in model_config.tasks:
            with self.subTest(task.name):
                self.assertGreater(aucs[task.name], 0.7)
                self.assertAlmostEqual(
                    aucs[task.name],
                    float(model_config.metadata[f"heldout_auc_{task.name}"]),
                    delta=1e-3)
        self.assertLess(
            os.path.getsize(os.path.join(DEMO_VERSION_DIR,
                                         export.WEIGHTS_FILE)),
            train.MAX_MODEL_BYTES)


if __name__ == "__main__":
    unittest.main()
