"""Fixtures made by Twitter's the-algorithm-ml (projects/home/recap).

For each case below, generate()
  1. writes the case's whole RecapConfig as config.yaml (with the feature
     mask files it names) and loads it with Twitter's own loader and pydantic
     classes: tml.core.config.load_config_from_yaml(RecapConfig, path);
  2. draws three batches of raw features, one viewer and six candidates each
     (the first batch with NaN, +-inf, +-1e30 and zeros in continuous
     columns the model reads), and passes them through Twitter's
     TruncateAndSlice (its data pipeline) where the config has one, from the
     config's folder, because Twitter opens mask paths relative to the
     working directory;
  3. builds the model with Twitter's create_ranking_model and a loss, so it
     is wrapped in ModelAndLoss as projects/home/recap/main.py does and its
     tensor names start with "model.";
  4. overwrites every parameter and buffer from a generator seeded by the
     case name: weights, LayerNorm and BatchNorm affines, BatchNorm
     statistics (variances positive), the affine maps (trainable), and the
     buffers Twitter computes from the config -- the Clamp bounds and the
     calibrators' ratios (each ratio scaled by at most 2 either way, which
     keeps the cases' ratios on their side of 1) -- so the checkpoint, not
     the YAML, holds every number Twitter's forward uses;
  5. runs Twitter's forward in eval mode; its calibrated_probabilities are
     the expected scores;
  6. saves ModelAndLoss.state_dict() with torch.save and checks that it
     strictly loads into a model rebuilt from the written YAML and gives the
     same scores bit for bit.
Cases Twitter builds and runs but our importer does not serve are written
with the text the import must fail with instead of scores.

Twitter's own code cannot run a serial MaskNet with an MLP
(MaskNet.forward indexes the Mlp, `self._dense_layers[net]`) nor an Mlp of
a single module (layer_sizes [n] without final_layer_activation: Mlp.forward
returns `shared_layer`, which only the module at index 1 sets), so there
are no cases of either.
"""

import contextlib
import copy
import dataclasses
import io
import math
import os
import tempfile
import zlib

import numpy as np
import torch
import yaml

import fixture_writer
from masknet_tools.protos import ranker_pb2
from the_algorithm_ml_support import twitter_tree

FRAMEWORK = "the-algorithm-ml"
BATCHES = 3
CANDIDATES = 6

FAV = "recap.engagement.is_favorited"
REPLY = "recap.engagement.is_replied"
REPORT = "recap.engagement.is_report_tweet_clicked"
RETWEET = "recap.engagement.is_retweeted"

# Twitter's TwHIN inputs in the order MultiTaskRankingModel concatenates them.
# The viewer's two are one row per request (context.dense, in this order);
# the author's is per candidate, after the continuous and binary features.
CONTEXT_EMBEDDINGS = ("user_embedding", "user_eng_embedding")
CANDIDATE_EMBEDDINGS = ("author_embedding",)

# train_data.seg_dense_schema.renamed_features, as in Twitter's local_prod.yaml.
_RENAMED_FEATURES = {
    "continuous": "home_recap_2022_cont__segdense_vals",
    "binary": "home_recap_2022_binary__segdense_vals",
    "discrete": "home_recap_2022_discrete__segdense_vals",
    "author_embedding": "original_author.timelines.twhin_author_follow_embeddings."
                        "twhin_author_follow_embeddings",
    "user_embedding": "user.timelines.twhin_user_follow_embeddings."
                      "twhin_user_follow_embeddings",
    "user_eng_embedding": "user.timelines.twhin_user_engagement_embeddings."
                          "twhin_user_engagement_embeddings",
}
_MASK_PATH_NOTE = (" The mask paths in config.yaml are bare file names, resolved against "
                   "config.yaml's folder (Twitter opens them relative to the working "
                   "directory; the generator ran Twitter's TruncateAndSlice from that "
                   "folder).")


@dataclasses.dataclass
class Case:
    """One configuration Twitter's code builds and runs.

    recap: the whole RecapConfig, as YAML data.
    raw_widths: the raw continuous and binary feature counts (before
      truncate_and_slice).
    embeddings: TwHIN input name -> width.
    masks: mask file name -> the 0/1 values written with numpy.save.
    refused_with: for a model our importer does not serve, the text its
      refusal must hold; otherwise None and the case has scores.
    """
    name: str
    description: str
    recap: dict
    raw_widths: dict
    embeddings: dict
    masks: dict = dataclasses.field(default_factory=dict)
    refused_with: str | None = None


def _tower(sizes=(8, 4, 1), batch_norm=None, dropout=None):
    return {"mlp_config": {"layer_sizes": list(sizes), "batch_norm": batch_norm,
                           "dropout": dropout, "final_layer_activation": False}}


def _block(output_size, input_layer_norm, aggregation_size=None, reduction_factor=None):
    return {"output_size": output_size, "aggregation_size": aggregation_size,
            "reduction_factor": reduction_factor, "input_layer_norm": input_layer_norm}


def _double_norm(batch_norm=None, clip=None, layer_norm=None):
    config = {"batch_norm_config": batch_norm, "layer_norm_config": layer_norm}
    if clip is not None:
        config["clip_magnitude"] = clip
    return {"double_norm_log_config": config}


def _recap(model, rates, embeddings=(), truncate_and_slice=None):
    """A whole RecapConfig; `rates` maps a task to its (pos, neg) down-sampling."""
    renamed = {k: _RENAMED_FEATURES[k] for k in ("continuous", "binary", "discrete", *embeddings)}
    train_data = {
        "global_batch_size": 8,
        "inputs": "/nonexistent/recap_data/*.gz",
        "seg_dense_schema": {"schema_path": "/nonexistent/segdense.json",
                             "renamed_features": renamed},
        "tasks": {task: {"pos_downsampling_rate": pos, "neg_downsampling_rate": neg}
                  for task, (pos, neg) in rates.items()},
    }
    if truncate_and_slice:
        train_data["preprocess"] = {"truncate_and_slice": truncate_and_slice}
    return {
        "training": {"save_dir": "/nonexistent/run", "num_train_steps": 1},
        "model": model,
        "train_data": train_data,
        "validation_data": {},
        "optimizer": {"adam": {}, "single_task_learning_rate": {"constant": 1e-3}},
    }


def cases():
    """The cases, served ones first."""
    served = [
        Case(
            "parallel_prodlike",
            "Like Twitter's local_prod.yaml, scaled down: parallel MaskNet (an aggregation_size "
            "block without input LayerNorm, a reduction_factor block with it) and MLP [12] with "
            "final ReLU; DoubleNormLog with BatchNorm(affine), clip 5 and LayerNorm eps 0; user, "
            "user_eng and author TwHIN embeddings; towers [8,4,1] with BatchNorm(affine=False), "
            "one with dropout; an affine map; calibration ratios below and above 1; "
            "continuous_feature_truncation equal to the raw width.",
            _recap(
                model={
                    "multi_task_type": "share_all",
                    "featurization_config": _double_norm(
                        batch_norm={"affine": True, "momentum": 0.01}, clip=5.0,
                        layer_norm={"axis": -1, "epsilon": 0.0, "center": True, "scale": True}),
                    "backbone": {"mask_net_config": {
                        "use_parallel": True,
                        "mask_blocks": [_block(10, False, aggregation_size=14),
                                        _block(8, True, reduction_factor=0.5)],
                        "mlp": {"layer_sizes": [12], "final_layer_activation": True},
                    }},
                    "tasks": {
                        FAV: dict(_tower(batch_norm={"affine": False, "momentum": 0.1}),
                                  affine_map={"scale": 1.5, "bias": -0.25}),
                        REPLY: _tower(batch_norm={"affine": False, "momentum": 0.1},
                                      dropout={"rate": 0.1}),
                        REPORT: _tower(batch_norm={"affine": False, "momentum": 0.1}),
                    },
                },
                rates={FAV: (0.8387, 0.01), REPLY: (1.0, 1.0), REPORT: (0.2, 0.5)},
                embeddings=("user_embedding", "user_eng_embedding", "author_embedding"),
                truncate_and_slice={"continuous_feature_truncation": 13,
                                    "binary_feature_truncation": 5}),
            raw_widths={"continuous": 13, "binary": 5},
            embeddings={"user_embedding": 6, "user_eng_embedding": 5, "author_embedding": 4}),
        Case(
            "serial_no_mlp",
            "Serial MaskNet of 3 blocks (input LayerNorm on, off, on; reduction_factor 0.7 and "
            "1.5, aggregation_size 9), no MLP; DoubleNormLog without BatchNorm, default clip, "
            "LayerNorm with the default eps 1e-3; no embeddings; towers [6,1]; affine maps on "
            "both tasks; continuous_feature_truncation 12 of 12 raw features.",
            _recap(
                model={
                    "multi_task_type": "share_all",
                    "featurization_config": _double_norm(
                        layer_norm={"axis": -1, "center": True, "scale": True}),
                    "backbone": {"mask_net_config": {
                        "use_parallel": False,
                        "mask_blocks": [_block(9, True, reduction_factor=0.7),
                                        _block(7, False, aggregation_size=9),
                                        _block(6, True, reduction_factor=1.5)],
                    }},
                    "tasks": {
                        FAV: dict(_tower((6, 1)), affine_map={"scale": 0.8, "bias": 0.3}),
                        RETWEET: dict(_tower((6, 1)), affine_map={"scale": 2.0, "bias": -1.0}),
                    },
                },
                rates={FAV: (1.0, 1.0), RETWEET: (0.1, 0.3)},
                truncate_and_slice={"continuous_feature_truncation": 12}),
            raw_widths={"continuous": 12, "binary": 5},
            embeddings={}),
        Case(
            "parallel_no_mlp_masked",
            "Parallel MaskNet of 3 blocks, no MLP (the towers read the concatenated block "
            "outputs); DoubleNormLog with BatchNorm(affine=False), clip 3, no LayerNorm; "
            "continuous raw 20 -> continuous_feature_truncation 16 -> "
            "continuous_feature_mask_path keeps 11; binary raw 7 -> truncation 6; user and "
            "author embeddings; towers [8,4,1] with BatchNorm(affine) and dropout." + _MASK_PATH_NOTE,
            _recap(
                model={
                    "multi_task_type": "share_all",
                    "featurization_config": _double_norm(
                        batch_norm={"affine": False, "momentum": 0.1}, clip=3.0),
                    "backbone": {"mask_net_config": {
                        "use_parallel": True,
                        "mask_blocks": [_block(5, True, aggregation_size=7),
                                        _block(4, False, reduction_factor=0.25),
                                        _block(6, True, aggregation_size=3)],
                    }},
                    "tasks": {
                        FAV: _tower(batch_norm={"affine": True, "momentum": 0.1},
                                    dropout={"rate": 0.2}),
                        REPORT: _tower(batch_norm={"affine": True, "momentum": 0.1}),
                    },
                },
                rates={FAV: (0.9, 0.02), REPORT: (0.25, 1.0)},
                embeddings=("user_embedding", "author_embedding"),
                truncate_and_slice={"continuous_feature_truncation": 16,
                                    "binary_feature_truncation": 6,
                                    "continuous_feature_mask_path": "continuous_mask.npy"}),
            raw_widths={"continuous": 20, "binary": 7},
            embeddings={"user_embedding": 5, "author_embedding": 3},
            masks={"continuous_mask.npy": [1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1]}),
        Case(
            "serial_bn_ln_noaffine_masks",
            "Serial MaskNet of 2 blocks (both with input LayerNorm), no MLP; DoubleNormLog with "
            "BatchNorm(affine), clip 2.5 and LayerNorm center=scale=false eps 1e-4; continuous "
            "raw 15 -> truncation 14 -> continuous_feature_mask_path keeps 9; binary raw 8 -> "
            "truncation 7 -> binary_feature_mask_path keeps 4; author embedding only; towers "
            "[4,2,1]; an affine map." + _MASK_PATH_NOTE,
            _recap(
                model={
                    "multi_task_type": "share_all",
                    "featurization_config": _double_norm(
                        batch_norm={"affine": True, "momentum": 0.1}, clip=2.5,
                        layer_norm={"axis": -1, "epsilon": 1e-4, "center": False,
                                    "scale": False}),
                    "backbone": {"mask_net_config": {
                        "use_parallel": False,
                        "mask_blocks": [_block(6, True, aggregation_size=4),
                                        _block(5, True, reduction_factor=0.6)],
                    }},
                    "tasks": {
                        REPLY: _tower((4, 2, 1)),
                        FAV: dict(_tower((4, 2, 1)), affine_map={"scale": 1.0, "bias": 0.0}),
                    },
                },
                rates={FAV: (0.5, 0.02), REPLY: (1.0, 1.0)},
                embeddings=("author_embedding",),
                truncate_and_slice={"continuous_feature_truncation": 14,
                                    "binary_feature_truncation": 7,
                                    "continuous_feature_mask_path": "continuous_mask.npy",
                                    "binary_feature_mask_path": "binary_mask.npy"}),
            raw_widths={"continuous": 15, "binary": 8},
            embeddings={"author_embedding": 3},
            masks={"continuous_mask.npy": [1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 1],
                   "binary_mask.npy": [0, 1, 1, 0, 1, 0, 1]}),
        Case(
            "parallel_mlp_bn",
            "Parallel MaskNet of 2 blocks (reduction_factor 0.33, aggregation_size 5) and MLP "
            "[10,7] with BatchNorm(affine) and dropout, no final ReLU; DoubleNormLog with "
            "BatchNorm(affine), clip 6 and LayerNorm eps 1e-5; user embedding only; towers "
            "[6,3,1] without BatchNorm, one with an affine map; 4 tasks; no truncate_and_slice.",
            _recap(
                model={
                    "multi_task_type": "share_all",
                    "featurization_config": _double_norm(
                        batch_norm={"affine": True, "momentum": 0.1}, clip=6.0,
                        layer_norm={"axis": -1, "epsilon": 1e-5, "center": True, "scale": True}),
                    "backbone": {"mask_net_config": {
                        "use_parallel": True,
                        "mask_blocks": [_block(6, False, reduction_factor=0.33),
                                        _block(5, True, aggregation_size=5)],
                        "mlp": {"layer_sizes": [10, 7],
                                "batch_norm": {"affine": True, "momentum": 0.1},
                                "dropout": {"rate": 0.1}, "final_layer_activation": False},
                    }},
                    "tasks": {
                        FAV: _tower((6, 3, 1)),
                        REPLY: _tower((6, 3, 1)),
                        REPORT: dict(_tower((6, 3, 1)), affine_map={"scale": 0.5, "bias": 1.0}),
                        RETWEET: _tower((6, 3, 1)),
                    },
                },
                rates={FAV: (0.5, 0.1), REPLY: (1.0, 1.0), REPORT: (0.3, 0.6),
                       RETWEET: (0.9561, 0.004)},
                embeddings=("user_embedding",)),
            raw_widths={"continuous": 9, "binary": 3},
            embeddings={"user_embedding": 3}),
        Case(
            "serial_masked_nobn",
            "Serial MaskNet of 2 blocks, no MLP; DoubleNormLog without BatchNorm, clip 4, "
            "LayerNorm center=scale=false eps 1e-5; continuous raw 14 -> truncation 12 -> "
            "continuous_feature_mask_path keeps 8 (a width neither the checkpoint nor the "
            "truncation gives); binary raw 6; user_eng and author embeddings; towers [5,3,1] "
            "with BatchNorm(affine), one with an affine map." + _MASK_PATH_NOTE,
            _recap(
                model={
                    "multi_task_type": "share_all",
                    "featurization_config": _double_norm(
                        clip=4.0, layer_norm={"axis": -1, "epsilon": 1e-5, "center": False,
                                              "scale": False}),
                    "backbone": {"mask_net_config": {
                        "use_parallel": False,
                        "mask_blocks": [_block(8, False, aggregation_size=6),
                                        _block(7, True, reduction_factor=0.4)],
                    }},
                    "tasks": {
                        FAV: _tower((5, 3, 1), batch_norm={"affine": True, "momentum": 0.1}),
                        REPLY: dict(_tower((5, 3, 1), batch_norm={"affine": True, "momentum": 0.1}),
                                    affine_map={"scale": 1.2, "bias": 0.1}),
                    },
                },
                rates={FAV: (1.0, 0.05), REPLY: (1.0, 1.0)},
                embeddings=("user_eng_embedding", "author_embedding"),
                truncate_and_slice={"continuous_feature_truncation": 12,
                                    "continuous_feature_mask_path": "continuous_mask.npy"}),
            raw_widths={"continuous": 14, "binary": 6},
            embeddings={"user_eng_embedding": 4, "author_embedding": 3},
            masks={"continuous_mask.npy": [0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1]}),
    ]
    by_name = {case.name: case for case in served}

    def variant(base, name, description, refused_with, edit):
        case = copy.deepcopy(by_name[base])
        case.name, case.description, case.refused_with = name, description, refused_with
        edit(case.recap["model"])
        return case

    refused = [
        variant("parallel_mlp_bn", "refused_share_partial",
                "parallel_mlp_bn with multi_task_type share_partial: Twitter's towers read the "
                "features and the backbone's output side by side.",
                "'share_partial' is not supported",
                lambda model: model.update(multi_task_type="share_partial")),
        variant("parallel_mlp_bn", "refused_mlp_backbone",
                "parallel_mlp_bn with an MLP backbone (backbone.mlp_config [12,9] with final "
                "ReLU) instead of a MaskNet.",
                "is not a MaskNet (mask_net_config)",
                lambda model: model.update(backbone={"mlp_config": {
                    "layer_sizes": [12, 9], "final_layer_activation": True}})),
        variant("serial_no_mlp", "refused_tower_final_layer_activation",
                "serial_no_mlp with final_layer_activation on one tower: Twitter applies a ReLU "
                "to that task's logit.",
                "a ReLU after the logit is not supported",
                lambda model: model["tasks"][RETWEET]["mlp_config"].update(
                    final_layer_activation=True)),
    ]
    return served + refused


# --- Twitter's code: config, data pipeline, model -------------------------


def _config_yaml(case):
    """The bytes of config.yaml: a comment, then the case's RecapConfig."""
    header = (f"# the-algorithm-ml RecapConfig of fixture case {case.name!r}, written by\n"
              "# tools/framework_fixtures/the_algorithm_ml.py; the model was built from it.\n")
    if case.masks:
        header += ("# Mask paths are relative to this file's folder (Twitter opens them\n"
                   "# relative to the working directory).\n")
    return (header + yaml.safe_dump(case.recap, sort_keys=False)).encode()


class _TwitterCode:
    """The Twitter modules the generator calls, imported from one checkout."""

    def __init__(self, source):
        twitter_tree.use_checkout(source)
        from absl import logging as absl_logging
        from tml.core import config as tml_config
        from tml.core import losses
        from tml.core.loss_type import LossType
        from tml.projects.home.recap import config as recap_config
        from tml.projects.home.recap import model as recap_model

        # Twitter's ml_logging turns on INFO; create_ranking_model would log
        # the whole module tree of every case.
        absl_logging.set_verbosity(absl_logging.ERROR)
        self._load_config = tml_config.load_config_from_yaml
        self._recap_config_class = recap_config.RecapConfig
        self._losses = losses
        self._bce = LossType.BCE_WITH_LOGITS
        self._create_ranking_model = recap_model.create_ranking_model
        self._truncate_and_slice = twitter_tree.truncate_and_slice_class()

    def load_config(self, folder):
        """Twitter's RecapConfig of folder/config.yaml."""
        return self._load_config(self._recap_config_class, os.path.join(folder, "config.yaml"))

    def truncate_and_slice(self, recap, folder, raw):
        """Twitter's TruncateAndSlice of raw {"continuous", "binary"} arrays.

        Without train_data.preprocess.truncate_and_slice the arrays are the
        model's inputs as they are.
        """
        preprocess = recap.train_data.preprocess
        if preprocess is None or preprocess.truncate_and_slice is None:
            return dict(raw)
        with contextlib.chdir(folder):  # where Twitter's relative mask paths lead
            layer = self._truncate_and_slice(preprocess.truncate_and_slice)
            out = layer({"continuous": raw["continuous"], "binary": raw["binary"]})
        return {name: np.ascontiguousarray(values) for name, values in out.items()}

    def build(self, recap, inputs):
        """ModelAndLoss(MultiTaskRankingModel), as projects/home/recap/main.py builds it.

        The input shapes are those of `inputs`, as RecapDataset's element spec
        would give them.
        """
        tasks = recap.model.tasks
        loss_fn = self._losses.build_multi_task_loss(
            loss_type=self._bce, tasks=list(tasks),
            pos_weights=[task.pos_weight for task in tasks.values()])
        shapes = {name: torch.Size([-1, values.shape[1]]) for name, values in inputs.items()}
        return self._create_ranking_model(data_spec=shapes, config=recap,
                                          device=torch.device("cpu"), loss_fn=loss_fn)


def _forward(wrapper, inputs):
    """Twitter's calibrated_probabilities [candidates, tasks], in eval mode."""
    wrapper.eval()
    kwargs = {"continuous_features": torch.from_numpy(inputs["continuous"]),
              "binary_features": torch.from_numpy(inputs["binary"])}
    for name in CONTEXT_EMBEDDINGS + CANDIDATE_EMBEDDINGS:
        if name in inputs:
            kwargs[name] = torch.from_numpy(inputs[name])
    with torch.no_grad():  # the inner model, called as ModelAndLoss.forward calls it
        return wrapper.model(**kwargs)["calibrated_probabilities"].numpy()


# --- Randomising ------------------------------------------------------------


def _uniform(generator, shape, low, high):
    return torch.rand(shape, generator=generator) * (high - low) + low


def _normal(generator, shape, std):
    return torch.randn(shape, generator=generator) * std


def randomize(model, seed):
    """Overwrites every tensor of model.state_dict() (see the module doc).

    Raises:
      AssertionError: a tensor of a kind this does not know was left as built.
    """
    generator = torch.Generator().manual_seed(seed)
    done = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            prefix = name + "." if name else ""
            if isinstance(module, torch.nn.Linear):
                if module.in_features == 1 and module.out_features == 1:  # an affine map
                    module.weight.copy_(_uniform(generator, (1, 1), 0.5, 1.5))
                    module.bias.copy_(_uniform(generator, (1,), -0.75, 0.75))
                else:
                    std = 1.3 / module.in_features ** 0.5
                    module.weight.copy_(_normal(generator, module.weight.shape, std))
                    module.bias.copy_(_normal(generator, module.bias.shape, 0.2))
                done |= {prefix + "weight", prefix + "bias"}
            elif isinstance(module, torch.nn.LayerNorm) and module.elementwise_affine:
                module.weight.copy_(_uniform(generator, module.weight.shape, 0.5, 1.5))
                module.bias.copy_(_normal(generator, module.bias.shape, 0.2))
                done |= {prefix + "weight", prefix + "bias"}
            elif isinstance(module, torch.nn.BatchNorm1d):
                n = module.num_features
                module.running_mean.copy_(_normal(generator, (n,), 0.5))
                module.running_var.copy_(_uniform(generator, (n,), 0.25, 2.5))
                module.num_batches_tracked.fill_(int(torch.randint(1, 10000, (1,), generator=generator)))
                done |= {prefix + "running_mean", prefix + "running_var",
                         prefix + "num_batches_tracked"}
                if module.affine:
                    module.weight.copy_(_uniform(generator, (n,), 0.5, 1.5))
                    module.bias.copy_(_normal(generator, (n,), 0.2))
                    done |= {prefix + "weight", prefix + "bias"}
        for name, buffer in model.named_buffers():
            if name in done:
                continue
            if name.endswith(".ratio"):  # NumericCalibration: neg / pos down-sampling
                buffer.mul_(math.exp(float(_uniform(generator, (), -0.7, 0.7))))
            elif name.endswith(("min_value", "max_value")):  # Clamp: -+clip_magnitude
                buffer.mul_(float(_uniform(generator, (), 0.6, 0.9)))
            else:
                continue
            done.add(name)
    left = sorted(set(model.state_dict()) - done)
    if left:
        raise AssertionError(f"not randomised: {left}")


# --- Inputs and requests ----------------------------------------------------


def _kept_columns(twitter, recap, folder, raw_widths):
    """The raw continuous columns that reach the model, in the model's order."""
    probe = {"continuous": np.arange(raw_widths["continuous"], dtype=np.float32)[None],
             "binary": np.zeros((1, raw_widths["binary"]), dtype=np.float32)}
    return [int(c) for c in twitter.truncate_and_slice(recap, folder, probe)["continuous"][0]]


def _raw_batch(case, seed, batch, kept):
    """One viewer's raw features and `CANDIDATES` candidates.

    Batch 0 puts NaN, +inf, -inf, 1e30 and -1e30 into continuous columns in
    `kept` (Twitter's InputNonFinite zeroes the non-finite ones).
    """
    rng = np.random.RandomState(seed + batch)
    continuous = (rng.randn(CANDIDATES, case.raw_widths["continuous"]) * 20).astype(np.float32)
    continuous[rng.rand(*continuous.shape) < 0.1] = 0.0
    if batch == 0:
        for row, value in enumerate((np.nan, np.inf, -np.inf, 1e30, -1e30)):
            continuous[row % CANDIDATES, kept[row % len(kept)]] = value
    raw = {"continuous": continuous,
           "binary": (rng.rand(CANDIDATES, case.raw_widths["binary"]) < 0.3).astype(np.float32)}
    for name, width in case.embeddings.items():
        if name in CONTEXT_EMBEDDINGS:  # one viewer: the same row for every candidate
            raw[name] = np.repeat(rng.randn(1, width).astype(np.float32), CANDIDATES, axis=0)
        else:
            raw[name] = rng.randn(CANDIDATES, width).astype(np.float32)
    return raw


def rank_request(inputs, first_id):
    """The RankRequest of one batch of Twitter's model inputs (one viewer).

    context.dense = user_embedding ++ user_eng_embedding (each present one;
    the batch's rows are identical); candidate i's dense = continuous[i] ++
    binary[i] ++ author_embedding[i], where continuous and binary are the
    model's inputs, after truncate_and_slice. Candidate ids count up from
    `first_id`.
    """
    request = ranker_pb2.RankRequest()
    for name in CONTEXT_EMBEDDINGS:
        if name in inputs:
            rows = inputs[name]
            if not (rows == rows[0]).all():
                raise AssertionError(f"{name}: more than one viewer in a batch")
            request.context.dense.extend(rows[0].tolist())
    for i in range(inputs["continuous"].shape[0]):
        candidate = request.candidates.add(id=first_id + i)
        for name in ("continuous", "binary") + CANDIDATE_EMBEDDINGS:
            if name in inputs:
                candidate.features.dense.extend(inputs[name][i].tolist())
    return request


def _our_task_name(twitter_task):
    """The name tools/import_model.py gives a Twitter task (as Twitter's sanitize)."""
    return twitter_task.replace(".", "__")


# --- One case ---------------------------------------------------------------


def _generate_case(twitter, case, commit, out_root):
    seed = zlib.crc32(case.name.encode()) % 2**31
    config_yaml = _config_yaml(case)
    files = {"config.yaml": config_yaml}
    for file_name, values in case.masks.items():
        buffer = io.BytesIO()
        np.save(buffer, np.array(values, dtype=np.int64))
        files[file_name] = buffer.getvalue()

    with tempfile.TemporaryDirectory() as folder:
        for file_name, data in files.items():
            with open(os.path.join(folder, file_name), "wb") as f:
                f.write(data)
        recap = twitter.load_config(folder)
        kept = _kept_columns(twitter, recap, folder, case.raw_widths)
        batches = []
        for b in range(BATCHES):
            raw = _raw_batch(case, seed, b, kept)
            inputs = twitter.truncate_and_slice(recap, folder, raw)
            batches.append(dict(raw, **inputs))
        if np.isfinite(batches[0]["continuous"]).all():
            raise AssertionError(f"{case.name}: no non-finite value reaches the model")

        wrapper = twitter.build(recap, batches[0])
        randomize(wrapper.model, seed)
        scores = [_forward(wrapper, inputs) for inputs in batches]
        buffer = io.BytesIO()
        torch.save(wrapper.state_dict(), buffer)
        files["checkpoint.pt"] = buffer.getvalue()

        rebuilt = twitter.build(twitter.load_config(folder), batches[0])
        rebuilt.load_state_dict(torch.load(io.BytesIO(files["checkpoint.pt"])), strict=True)
        for inputs, expected in zip(batches, scores):
            if not np.array_equal(_forward(rebuilt, inputs), expected):
                raise AssertionError(f"{case.name}: the saved checkpoint scores differently")

    import_args = ["--checkpoint", "checkpoint.pt", "--config", "config.yaml"]
    if case.refused_with:
        return fixture_writer.write_case(out_root, FRAMEWORK, commit, case.name, case.description,
                                         files, import_args, refused_with=case.refused_with)
    if not all(np.isfinite(s).all() for s in scores):
        raise AssertionError(f"{case.name}: Twitter's scores are not all finite")
    tasks = [_our_task_name(task) for task in recap.model.tasks]
    requests = []
    for b, (inputs, batch_scores) in enumerate(zip(batches, scores)):
        first_id = 1000 * (b + 1)
        request = rank_request(inputs, first_id)
        text = f"batch {b}: one viewer, {CANDIDATES} candidates"
        if b == 0:
            text += "; NaN, +-inf, +-1e30 and zeros among the continuous features"
        ids = [c.id for c in request.candidates]
        requests.append((text, request, fixture_writer.expected_response(tasks, ids, batch_scores)))
    return fixture_writer.write_case(out_root, FRAMEWORK, commit, case.name, case.description,
                                     files, import_args, cases=requests)


def generate(source, commit, out_root):
    """Writes every case's fixture from the checkout `source` at `commit`.

    Returns:
      The fixture folders written, in case order.
    """
    twitter = _TwitterCode(source)
    return [_generate_case(twitter, case, commit, out_root) for case in cases()]
