"""Damaged checkpoints of the frameworks' own models are refused, by name.

Generated from the fixtures the frameworks' own code wrote
(tests/fixtures/frameworks/, see tools/framework_fixtures/): for every
tensor of every checkpoint the import serves, the checkpoint with that tensor
removed, with an unexpected tensor beside it, and with its shape changed must
each be refused with a message that names the tensor as the checkpoint file
does (a buffer evaluation never reads, num_batches_tracked, may be absent).
"""

import glob
import json
import os
import unittest

import torch

from masknet_tools import checkpoints
from masknet_tools import importers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "frameworks")


def served_fixtures():
    """(framework/case, framework, saved state, import arguments) of every
    fixture the import serves."""
    found = []
    for meta_path in sorted(glob.glob(os.path.join(FIXTURES, "*", "*",
                                                   "meta.json"))):
        with open(meta_path) as f:
            meta = json.load(f)
        if "refused_with" in meta:
            continue
        folder = os.path.dirname(meta_path)
        args = dict(zip(meta["import_args"][::2], meta["import_args"][1::2]))

        def path(flag, args=args, folder=folder):
            return os.path.join(folder, args[flag]) if flag in args else None
        found.append((
            f"{meta['framework']}/{os.path.basename(folder)}",
            meta["framework"],
            checkpoints.load_state_dict(path("--checkpoint")),
            dict(config_path=path("--config"),
                 feature_map_path=path("--feature_map"),
                 expid=args.get("--expid"),
                 max_ids=int(args.get("--max_ids", 1)))))
    return found


def grown(tensor):
    """`tensor` with one more row (a 0-d tensor becomes two values)."""
    if tensor.dim() == 0:
        return tensor.reshape(1).repeat(2)
    return torch.cat([tensor, tensor[:1]])


class FrameworkMutationTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.fixtures = served_fixtures()

    def refusal(self, framework, state, options):
        """The import's message for `state`, or None if it imported."""
        try:
            importers.import_state(framework, state, **options)
        except ValueError as e:
            return str(e)
        return None

    def test_there_are_fixtures_of_every_framework(self):
        self.assertEqual({f[1] for f in self.fixtures}, set(importers.FRAMEWORKS))

    def test_every_fixture_imports_unchanged(self):
        for name, framework, saved, options in self.fixtures:
            with self.subTest(fixture=name):
                self.assertIsNone(self.refusal(framework, saved, options))

    def test_every_removed_tensor_is_named(self):
        for name, framework, saved, options in self.fixtures:
            for key in saved:
                with self.subTest(fixture=name, removed=key):
                    state = {k: v for k, v in saved.items() if k != key}
                    message = self.refusal(framework, state, options)
                    if key.endswith(".num_batches_tracked"):
                        self.assertIsNone(message)  # never read in evaluation
                    else:
                        self.assertIsNotNone(message, "imported")
                        self.assertIn(repr(key), message)

    def test_every_unexpected_tensor_beside_a_module_is_named(self):
        for name, framework, saved, options in self.fixtures:
            for key in saved:
                extra = key.rsplit(".", 1)[0] + ".unexpected"
                with self.subTest(fixture=name, beside=key):
                    state = dict(saved)
                    state[extra] = torch.zeros(1)
                    message = self.refusal(framework, state, options)
                    self.assertIsNotNone(message, "imported")
                    self.assertIn(repr(extra), message)

    def test_every_misshaped_tensor_is_named(self):
        for name, framework, saved, options in self.fixtures:
            for key in saved:
                with self.subTest(fixture=name, grown=key):
                    state = dict(saved)
                    state[key] = grown(saved[key])
                    message = self.refusal(framework, state, options)
                    self.assertIsNotNone(message, "imported")
                    self.assertIn(repr(key), message)

    def test_every_problem_is_named_in_one_message(self):
        for name, framework, saved, options in self.fixtures:
            keys = [k for k in saved if not k.endswith(".num_batches_tracked")]
            removed, reshaped = keys[0], keys[-1]
            with self.subTest(fixture=name):
                state = {k: v for k, v in saved.items() if k != removed}
                state[reshaped] = grown(saved[reshaped])
                extra = checkpoints.wrapper_prefix(saved) + "unexpected.tensor"
                state[extra] = torch.zeros(1)
                message = self.refusal(framework, state, options)
                self.assertIsNotNone(message, "imported")
                for key in (removed, reshaped, extra):
                    self.assertIn(repr(key), message)


if __name__ == "__main__":
    unittest.main()
