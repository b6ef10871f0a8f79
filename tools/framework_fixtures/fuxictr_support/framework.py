"""FuxiCTR's own code, imported from a checkout, run the way its
model_zoo/MaskNet/run_expid.py runs it.

run_expid.py does, for an experiment of a config folder:

    params = load_config(config_dir, expid); params["gpu"] = ...
    seed_everything(seed=params["seed"])
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    feature_map.load(data_dir/feature_map.json, params)
    model = getattr(src, params["model"])(feature_map, **params)
    ... model.fit(...) ...       # ends by loading the best checkpoint
    RankDataLoader(feature_map, stage="test", **params) -> model.evaluate

Experiment.build() repeats the lines before fit (on the CPU, gpu -1);
instead of training, the caller gives the model random values and saves it
with BaseModel.save_weights; Experiment.predict() loads that checkpoint into
a model built afresh (BaseModel.load_weights) and scores an npz data file
with FuxiCTR's RankDataLoader, its BatchCollator and BaseModel.predict.
Not run: run_expid.py itself (it chdirs, logs to files, builds datasets from
CSV and trains) and model_zoo/MaskNet/fuxictr_version.py (a version assert).
"""

import importlib.util
import json
import os
import sys
import types

import numpy as np
import yaml

from fuxictr_support import stubs

# model_zoo/MaskNet's package is named "src" (run_expid.py does `import src`);
# it is loaded under this name instead.
_ZOO_MODULE = "fuxictr_model_zoo_masknet"
_ZOO_CONFIG = os.path.join("model_zoo", "MaskNet", "config", "model_config.yaml")
_ZOO_EXPERIMENT = "MaskNet_test"


def load(source):
    """FuxiCTR from the checkout `source`: a namespace of what is used.

    Raises RuntimeError when another `fuxictr` package was imported first.
    """
    stubbed = stubs.install()
    if source not in sys.path:
        sys.path.insert(0, source)
    import fuxictr
    package = os.path.realpath(os.path.dirname(fuxictr.__file__))
    if package != os.path.realpath(os.path.join(source, "fuxictr")):
        raise RuntimeError(f"fuxictr was imported from {package}, not from {source}")
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr.utils import load_config
    zoo = sys.modules.get(_ZOO_MODULE)
    if zoo is None:
        folder = os.path.join(source, "model_zoo", "MaskNet", "src")
        spec = importlib.util.spec_from_file_location(
            _ZOO_MODULE, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
        zoo = importlib.util.module_from_spec(spec)
        sys.modules[_ZOO_MODULE] = zoo
        spec.loader.exec_module(zoo)
    with open(os.path.join(source, _ZOO_CONFIG)) as f:
        zoo_config = yaml.safe_load(f)
    return types.SimpleNamespace(version=fuxictr.__version__, load_config=load_config,
                                 FeatureMap=FeatureMap, RankDataLoader=RankDataLoader,
                                 seed_everything=seed_everything, zoo=zoo, zoo_config=zoo_config,
                                 stubbed=stubbed)


def zoo_experiment(fx, **overrides):
    """(Base, experiment) of FuxiCTR's model_zoo/MaskNet config, MaskNet_test,
    with `overrides` applied to the experiment.

    Base's verbose is 0 (verbose > 0 draws tqdm progress bars, a stub here)
    and num_workers 0 (the data loader forks no worker processes).
    """
    base = dict(fx.zoo_config["Base"], verbose=0, num_workers=0)
    experiment = dict(fx.zoo_config[_ZOO_EXPERIMENT])
    experiment.update(overrides)
    return base, experiment


class Experiment:
    """One MaskNet experiment in a scratch folder, laid out as run_expid.py
    expects: config/model_config.yaml and dataset_config.yaml, and
    data/<dataset_id>/feature_map.json (with any pretrained-embedding files).
    """

    def __init__(self, fx, folder, expid, base, experiment, labels, features, rng):
        """Writes the folder's files.

        Args:
          fx: what load() returned.
          folder: an empty scratch folder.
          expid: the experiment's name in model_config.yaml.
          base, experiment: its Base and experiment parameters.
          labels: the label columns.
          features: (name, spec) pairs in feature_map.json order, as
            FuxiCTR's FeatureProcessor writes them.
          rng: a numpy Generator for the values of pretrained embeddings.
        """
        self.fx = fx
        self.expid = expid
        self.config_dir = os.path.join(folder, "config")
        self.data_dir = os.path.join(folder, "data", experiment["dataset_id"])
        os.makedirs(self.config_dir)
        os.makedirs(self.data_dir)
        self.model_config = os.path.join(self.config_dir, "model_config.yaml")
        with open(self.model_config, "w") as f:
            yaml.safe_dump({"Base": base, expid: experiment}, f, sort_keys=False)
        with open(os.path.join(self.config_dir, "dataset_config.yaml"), "w") as f:
            yaml.safe_dump({experiment["dataset_id"]: {
                "data_root": os.path.dirname(self.data_dir), "data_format": "npz",
                "train_data": None, "valid_data": None, "test_data": None}}, f, sort_keys=False)
        # feature_map.json as FeatureProcessor.fit ends: FeatureMap.save.
        feature_map = fx.FeatureMap(experiment["dataset_id"], self.data_dir)
        feature_map.labels = list(labels)
        for name, spec in features:
            feature_map.features[name] = dict(spec)
        feature_map.num_fields = feature_map.get_num_fields()
        feature_map.total_features = sum(
            1 if s["type"] == "numeric" else s["vocab_size"]
            for s in feature_map.features.values()
            if s["type"] != "meta" and "share_embedding" not in s)
        feature_map.set_column_index()
        self.feature_map_json = os.path.join(self.data_dir, "feature_map.json")
        feature_map.save(self.feature_map_json)
        if any("pretrained_emb" in spec for _, spec in features):
            self._write_pretrained_embeddings(features, rng)
        self.checkpoint = os.path.join(folder, f"{expid}.model")

    def _write_pretrained_embeddings(self, features, rng):
        """The files a feature with "pretrained_emb" needs, in the formats
        PretrainedEmbedding reads: the embedding file (npz, keys "key" and
        "value") and feature_vocab.json ({feature: {token: id}} of every
        categorical and sequence feature, as FeatureProcessor.save_vocab
        writes it); tokens are "<feature>_<id>"."""
        vocab = {}
        for name, spec in features:
            if spec["type"] in ("categorical", "sequence"):
                size = spec["vocab_size"]
                vocab[name] = {"__PAD__": 0, **{f"{name}_{i}": i for i in range(1, size - 1)},
                               "__OOV__": size - 1}
        for name, spec in features:
            if "pretrained_emb" in spec:
                tokens = [t for t in vocab[name] if not t.startswith("__")]
                value = rng.normal(0, 0.5, (len(tokens), spec["pretrain_dim"]))
                np.savez(os.path.join(self.data_dir, spec["pretrained_emb"]),
                         key=np.array(tokens), value=value.astype(np.float32))
        with open(os.path.join(self.data_dir, "feature_vocab.json"), "w") as f:
            json.dump(vocab, f, indent=4)

    def build(self):
        """(params, feature_map, model): the model FuxiCTR builds, in eval mode."""
        params = self.fx.load_config(self.config_dir, self.expid)
        params["gpu"] = -1
        self.fx.seed_everything(seed=params["seed"])
        feature_map = self.fx.FeatureMap(params["dataset_id"], self.data_dir)
        feature_map.load(self.feature_map_json, params)
        model = getattr(self.fx.zoo, params["model"])(feature_map, **params)
        model.eval()
        return params, feature_map, model

    def predict(self, columns, scratch_name):
        """FuxiCTR's scores of one npz data file made of `columns`.

        The model is built afresh and loads the checkpoint (save_weights must
        have written it); the file is read by RankDataLoader(stage="test")
        with its BatchCollator, in mini-batches of the experiment's
        batch_size, and scored by BaseModel.predict (eval, no_grad).
        Returns y_pred, float64 of the model's float32 outputs, in row order.
        """
        params, feature_map, model = self.build()
        model.load_weights(self.checkpoint)
        path = os.path.join(self.data_dir, scratch_name)
        np.savez(path, **columns)
        test_gen = self.fx.RankDataLoader(feature_map, stage="test",
                                          **dict(params, test_data=path)).make_iterator()
        return model.predict(test_gen)
