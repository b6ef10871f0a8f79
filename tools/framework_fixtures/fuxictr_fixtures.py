"""FuxiCTR's fixtures: MaskNets made and scored by FuxiCTR's own code.

Each case below is a FuxiCTR MaskNet experiment: FuxiCTR's model_zoo/MaskNet
config (Base and MaskNet_test) with the case's changes, and a feature_map.json
as FuxiCTR's FeatureProcessor writes it. FuxiCTR's code, imported from the
checkout (fuxictr_support/framework.py), builds the model as run_expid.py
does; every parameter gets seeded random values (fuxictr_support/weights.py)
and BaseModel.save_weights writes the checkpoint. For a served case, each
request is one viewer's candidates: FuxiCTR's RankDataLoader and
BaseModel.predict score them from an npz data file, and the fixture expects
those scores from our server (fuxictr_support/rank_requests.py maps the columns
to the request). For a refused case FuxiCTR's code builds and runs the model
just the same, and the fixture expects the importer to refuse it with
`refused_with`, a part of its message.

Configurations FuxiCTR's own code cannot build or run have no case
(tools/framework_fixtures/README.md lists them).
"""

import collections
import glob
import json
import os
import shutil
import tempfile
import zlib

import numpy as np

from fixture_writer import expected_response, write_case
from fuxictr_support import framework, rank_requests, weights

FRAMEWORK = "fuxictr"
LABEL = "clk"
# The importer names the model's one task after feature_map.json's labels[0].
TASK = LABEL
# FuxiCTR's predict() scores in mini-batches of this many rows, so a request
# of more candidates crosses batches.
BATCH_SIZE = 4

# experiment: changes to model_zoo's MaskNet_test; features: (name, spec) in
# feature_map.json order; candidates: one request (viewer) per entry;
# padding: where sequences are padded; refused_with: part of the import's
# refusal, or None for a served case.
Case = collections.namedtuple(
    "Case", "name description experiment features candidates padding refused_with",
    defaults=((6, 3, 1), "post", None))


# Feature specs in the shape FuxiCTR's FeatureProcessor.fit writes them:
# categorical and sequence ids have padding_idx 0 and vocab_size = the
# largest id + 1 (0 is __PAD__, vocab_size - 1 __OOV__); a sequence's
# feature_encoder defaults to "layers.MaskedAveragePooling()".
def categorical(name, source, vocab_size, **more):
    return name, {"source": source, "type": "categorical", "padding_idx": 0,
                  "vocab_size": vocab_size, **more}


def numeric(name, source, **more):
    return name, {"source": source, "type": "numeric", **more}


def sequence(name, source, vocab_size, max_len, pooling="layers.MaskedAveragePooling()", **more):
    return name, {"source": source, "type": "sequence", "feature_encoder": pooling,
                  "padding_idx": 0, "max_len": max_len, "vocab_size": vocab_size, **more}


def meta(name):
    return name, {"type": "meta"}


SUM = "layers.MaskedSumPooling()"

# A small serial MaskNet that each refused case changes in one way.
_SMALL = {"model_type": "SerialMaskNet", "embedding_dim": 2, "dnn_hidden_units": [5],
          "reduction_ratio": 0.5, "emb_layernorm": True, "net_layernorm": True}
_SMALL_FEATURES = [categorical("user_id", "user", 7), categorical("item_id", "item", 11),
                   sequence("item_tags", "item", 9, 3), numeric("item_z", "item")]


def _small_with(name, change):
    return [(n, dict(s, **change)) if n == name else (n, s) for n, s in _SMALL_FEATURES]


CASES = [
    Case("serial_two_blocks_layernorms",
         "SerialMaskNet, two blocks [8, 6], emb_layernorm and net_layernorm, reduction_ratio 1, "
         "net_dropout 0.1; user, item and context fields interleaved: categorical, numeric, "
         "a sum-pooled user sequence, a mean-pooled item sequence, a meta feature between them",
         {"model_type": "SerialMaskNet", "embedding_dim": 3, "dnn_hidden_units": [8, 6],
          "reduction_ratio": 1, "emb_layernorm": True, "net_layernorm": True, "net_dropout": 0.1},
         [categorical("user_id", "user", 12), numeric("user_age", "user"),
          categorical("item_id", "item", 20), sequence("user_hist", "user", 15, 5, SUM),
          meta("group_id"), numeric("item_price", "item"), sequence("item_tags", "item", 10, 4),
          categorical("hour", "context", 9)]),
    Case("serial_three_blocks_no_layernorm",
         "SerialMaskNet, three blocks [8, 6, 5] with a per-block activation list (relu, ReLU, "
         "relu) and dropout list, no LayerNorm, reduction_ratio 0.5; a numeric user field first, "
         "a field of source '' (a candidate field), a mean-pooled sequence padded 'pre'",
         {"model_type": "SerialMaskNet", "embedding_dim": 2, "dnn_hidden_units": [8, 6, 5],
          "dnn_hidden_activations": ["relu", "ReLU", "relu"], "reduction_ratio": 0.5,
          "emb_layernorm": False, "net_layernorm": False, "net_dropout": [0.1, 0, 0.2]},
         [numeric("user_score", "user"), categorical("user_id", "user", 10),
          categorical("item_id", "item", 16), sequence("item_tags", "item", 12, 5),
          numeric("item_ctr", "item"), categorical("device", "", 5)],
         padding="pre"),
    Case("parallel_emb_layernorm_mlp",
         "ParallelMaskNet, 3 blocks of 4, emb_layernorm only, an MLP [6, 4] with dropout 0.1 "
         "(which shifts MLP_Block's layer indices), reduction_ratio 2; a mean-pooled user "
         "sequence in the context",
         {"model_type": "ParallelMaskNet", "embedding_dim": 3, "dnn_hidden_units": [6, 4],
          "dnn_hidden_activations": "ReLU", "parallel_num_blocks": 3, "parallel_block_dim": 4,
          "reduction_ratio": 2, "emb_layernorm": True, "net_layernorm": False, "net_dropout": 0.1},
         [categorical("user_id", "user", 10), sequence("user_tags", "user", 9, 3),
          categorical("item_id", "item", 18), categorical("item_cate", "item", 6),
          numeric("item_price", "item")]),
    Case("parallel_net_layernorm_no_mlp",
         "ParallelMaskNet, 2 blocks of 5, net_layernorm only, dnn_hidden_units [] (the blocks "
         "feed the logit), reduction_ratio 1.5; no user field (an empty request context), a "
         "sum-pooled sequence of source context, a meta feature between the fields",
         {"model_type": "ParallelMaskNet", "embedding_dim": 3, "dnn_hidden_units": [],
          "parallel_num_blocks": 2, "parallel_block_dim": 5, "reduction_ratio": 1.5,
          "emb_layernorm": False, "net_layernorm": True, "net_dropout": 0},
         [categorical("item_id", "item", 16), numeric("item_x", "item"), meta("req_id"),
          categorical("item_brand", "item", 7), sequence("ctx_hist", "context", 10, 4, SUM),
          numeric("item_y", "item")]),
    Case("serial_shared_embedding",
         "SerialMaskNet, one block [5], both LayerNorms, reduction_ratio 0.3; a user categorical "
         "and a user sequence share the item's table (share_embedding: one table under three "
         "names in the checkpoint)",
         {"model_type": "SerialMaskNet", "embedding_dim": 2, "dnn_hidden_units": [5],
          "reduction_ratio": 0.3, "emb_layernorm": True, "net_layernorm": True},
         [categorical("item_id", "item", 11), categorical("user_id", "user", 7),
          categorical("user_last_item", "user", 11, share_embedding="item_id"),
          sequence("user_clicks", "user", 11, 3, share_embedding="item_id"),
          numeric("item_z", "item")]),
    Case("refused_leaky_relu",
         "dnn_hidden_activations LeakyReLU, which FuxiCTR builds (getattr(nn, name)) and the "
         "import refuses by name",
         dict(_SMALL, dnn_hidden_activations="LeakyReLU"), _SMALL_FEATURES, (3,),
         refused_with="dnn_hidden_activations 'LeakyReLU' is not supported"),
    Case("refused_encoder_with_parameters",
         "a numeric feature with feature_encoder nn.Linear(2, 2): FuxiCTR applies it after the "
         "embedding; the import refuses encoders on anything but sequences",
         _SMALL, _small_with("item_z", {"feature_encoder": "nn.Linear(2, 2, bias=False)"}), (3,),
         refused_with="feature 'item_z' (numeric): feature_encoder 'nn.Linear(2, 2, bias=False)' "
                      "is not supported"),
    Case("refused_parameter_free_encoder",
         "a categorical feature with feature_encoder nn.Tanh(): no tensor shows it, but FuxiCTR "
         "applies it to the embedding; the import refuses it by name",
         _SMALL, _small_with("item_id", {"feature_encoder": "nn.Tanh()"}), (3,),
         refused_with="feature 'item_id' (categorical): feature_encoder 'nn.Tanh()' is not "
                      "supported"),
    Case("refused_serial_without_blocks",
         "SerialMaskNet with dnn_hidden_units []: FuxiCTR builds no mask block and puts the "
         "logit on the embeddings; the import refuses a MaskNet without blocks by name",
         dict(_SMALL, dnn_hidden_units=[]), _SMALL_FEATURES, (3,),
         refused_with="a SerialMaskNet with dnn_hidden_units [] has no mask blocks"),
    Case("refused_regression_task",
         "task regression (FuxiCTR's output activation is the identity): the import serves "
         "binary_classification only",
         dict(_SMALL, task="regression", loss="mse_loss"), _SMALL_FEATURES, (3,),
         refused_with="task 'regression' is not supported"),
    Case("refused_feature_specs",
         "the model config's feature_specs turns item_tags into a sum-pooled sequence "
         "(FuxiCTR applies it over feature_map.json); the import refuses the option",
         dict(_SMALL, feature_specs=[{"name": "item_tags", "feature_encoder": SUM}]),
         _SMALL_FEATURES, (3,),
         refused_with="model config option 'feature_specs' is not supported"),
    Case("refused_pretrained_embedding",
         "item_id with a frozen pretrained embedding (pretrain_dim 3, projected to 2), from an "
         "npz file FuxiCTR's PretrainedEmbedding loads; the import refuses pretrained embeddings",
         _SMALL,
         _small_with("item_id", {"oov_idx": 10, "pretrained_emb": "pretrained_item_id.npz",
                                 "freeze_emb": True, "pretrain_usage": "init", "pretrain_dim": 3}),
         (3,), refused_with="pretrained embeddings are not supported"),
]


def generate(source, commit, out_root):
    """Writes every case under out_root/fuxictr/; returns their folders.

    Args:
      source: a checkout of https://github.com/reczoo/FuxiCTR.
      commit: its commit, recorded in each meta.json.
      out_root: the folder of all frameworks' fixtures.

    A fuxictr fixture folder of no case here is removed.
    """
    fx = framework.load(source)
    folders = [_write(fx, case, commit, out_root) for case in CASES]
    for meta_path in glob.glob(os.path.join(out_root, FRAMEWORK, "*", "meta.json")):
        folder = os.path.dirname(meta_path)
        with open(meta_path) as f:
            stale = json.load(f).get("framework") == FRAMEWORK and folder not in folders
        if stale:
            shutil.rmtree(folder)
    return folders


def _write(fx, case, commit, out_root):
    seed = zlib.crc32(case.name.encode())  # a case's values do not depend on the others
    rng = np.random.default_rng(seed)
    expid = f"MaskNet_{case.name}"
    base, experiment = framework.zoo_experiment(fx, dataset_id=case.name, batch_size=BATCH_SIZE,
                                                **case.experiment)
    with tempfile.TemporaryDirectory(prefix="fuxictr_fixture_") as scratch:
        run = framework.Experiment(fx, scratch, expid, base, experiment, [LABEL], case.features, rng)
        _, feature_map, model = run.build()
        weights.randomize(model, seed)
        model.save_weights(run.checkpoint)
        parity = []
        for k, n in enumerate(case.candidates):
            # A refused case is scored too: FuxiCTR's code must run it.
            columns = rank_requests.viewer_columns(feature_map.features, feature_map.labels, n, rng,
                                                   case.padding)
            scores = run.predict(columns, f"viewer_{k}.npz")
            if len(scores) != n or not np.isfinite(scores).all():
                raise RuntimeError(f"{case.name}: FuxiCTR gave {scores} for {n} rows")
            candidate_ids = rng.choice(10 ** 9, size=n, replace=False) + 1  # distinct
            request = rank_requests.rank_request(feature_map.features, columns, candidate_ids)
            parity.append((f"viewer {k}: {n} candidates, scored by FuxiCTR's predict() in "
                           f"batches of {BATCH_SIZE}", request,
                           expected_response([TASK], candidate_ids.tolist(), [[s] for s in scores])))
        files = {}
        for path in (run.checkpoint, run.model_config, run.feature_map_json):
            with open(path, "rb") as f:
                files[os.path.basename(path)] = f.read()
    import_args = ["--checkpoint", os.path.basename(run.checkpoint), "--config", "model_config.yaml",
                   "--feature_map", "feature_map.json"]
    return write_case(out_root, FRAMEWORK, commit, case.name, case.description, files, import_args,
                      cases=() if case.refused_with else parity, refused_with=case.refused_with)
