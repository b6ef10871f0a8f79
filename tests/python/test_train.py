"""Tests of masknet_tools.train on a small data set."""

import os
import tempfile
import unittest

import numpy as np
import torch

from masknet_tools import export
from masknet_tools import synthetic
from masknet_tools import train


class TrainTest(unittest.TestCase):

    def test_a_short_training_learns_and_exports_with_metadata(self):
        torch.set_num_threads(1)
        options = train.TrainingOptions(data=synthetic.SyntheticOptions(
            num_requests=300, seed=1),
                                        epochs=2,
                                        seed=1)
        model, data, aucs = train.train(options, log=lambda _: None)
        self.assertGreater(aucs["click"], 0.6)
        self.assertGreater(aucs["like"], 0.6)
        with tempfile.TemporaryDirectory() as root:
            version_dir = train.export_demo(model, data, aucs, options, root,
                                            "test command")
            self.assertEqual(version_dir,
                             os.path.join(root, train.MODEL_NAME, "1"))
            model_config, weights = export.load_model(version_dir)
        self.assertEqual(model_config.metadata["heldout_auc_click"],
                         f"{aucs['click']:.4f}")
        self.assertEqual(model_config.metadata["command"], "test command")
        self.assertEqual(model_config.metadata["seed"], "1")
        np.testing.assert_array_equal(weights["mlp.0.weight"],
                                      model.state_dict()["mlp.0.weight"])

    def test_fit_dense_normalization_standardizes_affine_fields(self):
        data = synthetic.generate(synthetic.SyntheticOptions(num_requests=50))
        model = train.reference.MaskNetReference(train.demo_config(
            data.options)).double()
        batch = data.field_batch(np.arange(data.num_rows))
        train.fit_dense_normalization(model, batch)
        with torch.no_grad():
            age = model.fields["tweet_age_hours"](
                batch.dense["tweet_age_hours"])
        self.assertAlmostEqual(age.mean().item(), 0, places=6)
        self.assertAlmostEqual(age.std(unbiased=False).item(), 1, places=4)


if __name__ == "__main__":
    unittest.main()
