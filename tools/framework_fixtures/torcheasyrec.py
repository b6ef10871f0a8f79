"""TorchEasyRec's MaskNet rank model, built and scored by TorchEasyRec's code.

For each case of CASES, TorchEasyRec (a checkout, imported as
torcheasyrec_support/checkout.py says) parses the case's pipeline config and
writes it back as it writes pipeline.config into a model_dir; builds the
features and the model with main.py's _create_features and _create_model,
wraps it in TrainWrapper (whose "model." prefix its checkpoints carry) and
allocates it with init_parameters; every parameter and buffer is then drawn
from a generator seeded by the case's name. The checkpoint is
torch.save(TrainWrapper(model).state_dict()): TorchEasyRec itself saves a
torch.distributed.checkpoint folder (model.ckpt-N/model), which its users
turn into this file with
torch.distributed.checkpoint.format_utils.dcp_to_torch_save (torch >= 2.2).

Served cases: TorchEasyRec's DataParser turns the inputs (the ids and values
its feature generator would have produced; fg_mode FG_NONE) into a Batch,
the wrapped model scores it in eval mode, and each batch becomes a
RankRequest with TorchEasyRec's probs as the expected scores. Refused cases:
models TorchEasyRec builds and our importer refuses, with the text its
refusal must hold.

TorchEasyRec at this commit cannot build a MaskNet rank model without
top_mlp (models/masknet.py sizes output_linear from
top_mlp.hidden_units[-1]: IndexError), although its MaskNetModule supports
it. The cases marked `without_top_mlp` are built with one change, described
in their meta.json: the model's MaskNetModule is TorchEasyRec's, built from
the top_mlp-less config, and output_linear takes the module's output_dim().
"""

import collections
import copy
import hashlib
import io
import os
import shutil
import tempfile

import torch

import fixture_writer
from masknet_tools.protos import ranker_pb2
from torcheasyrec_support import checkout

FRAMEWORK = "torcheasyrec"
MAX_IDS = 3  # the longest bag in the requests: the import's --max_ids
BATCH_SIZES = (4, 1, 5)  # one request per batch, one candidate per sample
TASKS = ("probs",)  # our importer's name for TorchEasyRec's probs
CHECKPOINT = "model.pt"
CONFIG = "pipeline.config"
IMPORT_ARGS = ("--checkpoint", CHECKPOINT, "--config", CONFIG, "--max_ids", str(MAX_IDS))

CHECKPOINT_NOTE = (
    "The checkpoint is torch.save(TrainWrapper(model).state_dict()), keys \"model.<module path>\" as in "
    "TorchEasyRec's checkpoints; TorchEasyRec saves a distributed checkpoint (model.ckpt-N/model), which users "
    "convert to this file with torch.distributed.checkpoint.format_utils.dcp_to_torch_save.")
REQUEST_NOTE = (
    "Requests: one per TorchEasyRec batch, one candidate per sample, every field candidate-scoped; ids, id_counts "
    "and dense values in feature-group order; expected = TorchEasyRec's probs.")
WITHOUT_TOP_MLP_NOTE = (
    "TorchEasyRec's MaskNetModule without top_mlp; the rank model's output layer sized from the module's output "
    "(TorchEasyRec at this commit raises IndexError).")

# Features: id features of every kind of row count (num_buckets,
# hash_bucket_size, vocab_list), sum and mean pooling, a table shared by two
# features (embedding_name), raw features of 1 and 3 values (a raw feature's
# embedding_dim without boundaries and its normalizer do nothing in the
# model), listed in another order than the group reads them.
MIXED_FEATURES = """\
feature_configs { id_feature { feature_name: "cat_a" expression: "user:cat_a" embedding_dim: 4 num_buckets: 10 } }
feature_configs { id_feature { feature_name: "cat_b" expression: "item:cat_b" embedding_dim: 3 hash_bucket_size: 12
                               pooling: "mean" } }
feature_configs { raw_feature { feature_name: "int_a" expression: "user:int_a" } }
feature_configs { id_feature { feature_name: "tag_u" expression: "user:tag_u" embedding_dim: 4 num_buckets: 9
                               embedding_name: "tag_shared" } }
feature_configs { raw_feature { feature_name: "vec_c" expression: "item:vec_c" value_dim: 3 embedding_dim: 16
                                normalizer: "method=expression,expr=log(x+3)" } }
feature_configs { id_feature { feature_name: "tag_i" expression: "item:tag_i" embedding_dim: 4 num_buckets: 9
                               embedding_name: "tag_shared" } }
"""
MIXED_GROUP = """\
    feature_groups {
        group_name: "all"
        feature_names: ["tag_i", "int_a", "cat_b", "vec_c", "cat_a", "tag_u"]
        group_type: DEEP
    }
"""
SMALL_FEATURES = """\
feature_configs { id_feature { feature_name: "uid" expression: "user:uid" embedding_dim: 3 num_buckets: 7 } }
feature_configs { id_feature { feature_name: "iid" expression: "item:iid" embedding_dim: 5
                               vocab_list: ["a", "b", "c", "d"] pooling: "mean" } }
feature_configs { raw_feature { feature_name: "price" expression: "item:price" } }
"""
SMALL_GROUP = """\
    feature_groups {
        group_name: "deep"
        feature_names: ["uid", "price", "iid"]
        group_type: DEEP
    }
"""

Case = collections.namedtuple("Case", "name what features group mask_net model_extra without_top_mlp refused_with",
                              defaults=("", False, None))

CASES = (
    Case("parallel_bn_shared",
         "parallel, 2 blocks, reduction_ratio 2 with aggregation_dim 32 also set (reduction_ratio wins), top_mlp "
         "[8, 4] with use_bn and dropout; id features summed and averaged, a shared table, raw features of 1 and 3 "
         "values; the group's order differs from feature_configs'",
         MIXED_FEATURES, MIXED_GROUP, """
            n_mask_blocks: 2
            mask_block { reduction_ratio: 2 aggregation_dim: 32 hidden_dim: 8 }
            use_parallel: true
            top_mlp { hidden_units: [8, 4] use_bn: true dropout_ratio: [0.1] }"""),
    Case("serial_aggdim_nobias",
         "serial, 3 blocks, reduction_ratio 0 so that aggregation_dim 5 is used, hidden_dim 6, top_mlp [6, 3] "
         "without bias, dropout per layer; a vocab_list feature",
         SMALL_FEATURES, SMALL_GROUP, """
            n_mask_blocks: 3
            mask_block { reduction_ratio: 0 aggregation_dim: 5 hidden_dim: 6 }
            use_parallel: false
            top_mlp { hidden_units: [6, 3] bias: false dropout_ratio: [0.1, 0.2] }"""),
    Case("serial_default_ratio",
         "serial, 2 blocks, reduction_ratio unset (1.0) with aggregation_dim 3 set: aggregation_dim is ignored and "
         "block k aggregates to its input's width (19, then hidden_dim 5); top_mlp [4]; mixed features",
         MIXED_FEATURES, MIXED_GROUP, """
            n_mask_blocks: 2
            mask_block { aggregation_dim: 3 hidden_dim: 5 }
            use_parallel: false
            top_mlp { hidden_units: [4] }"""),
    Case("parallel_fraction_ratio",
         "parallel (the default), 3 blocks, reduction_ratio 0.5 (int(9 * 0.5) = 4), hidden_dim 3, top_mlp [5, 2] "
         "with use_bn",
         SMALL_FEATURES, SMALL_GROUP, """
            n_mask_blocks: 3
            mask_block { reduction_ratio: 0.5 hidden_dim: 3 }
            top_mlp { hidden_units: [5, 2] use_bn: true }"""),
    Case("no_top_mlp",
         "parallel, 2 blocks, reduction_ratio 1.5, hidden_dim 4, no top_mlp: the logit reads the blocks' outputs",
         SMALL_FEATURES, SMALL_GROUP, """
            n_mask_blocks: 2
            mask_block { reduction_ratio: 1.5 hidden_dim: 4 }
            use_parallel: true""", without_top_mlp=True),
    Case("serial_no_top_mlp",
         "serial, 2 blocks, reduction_ratio 0.5, hidden_dim 6, no top_mlp: the logit reads the last block's output; "
         "mixed features",
         MIXED_FEATURES, MIXED_GROUP, """
            n_mask_blocks: 2
            mask_block { reduction_ratio: 0.5 hidden_dim: 6 }
            use_parallel: false""", without_top_mlp=True),
    Case("top_mlp_use_ln",
         "top_mlp with use_ln (a LayerNorm after each layer), which the import does not support",
         SMALL_FEATURES, SMALL_GROUP, """
            n_mask_blocks: 1
            mask_block { reduction_ratio: 1 hidden_dim: 4 }
            top_mlp { hidden_units: [4] use_ln: true }""",
         refused_with="top_mlp.use_ln is not supported"),
    Case("top_mlp_leaky_relu",
         "top_mlp with activation nn.LeakyReLU(negative_slope=0.2), which the import does not support",
         SMALL_FEATURES, SMALL_GROUP, """
            n_mask_blocks: 1
            mask_block { reduction_ratio: 1 hidden_dim: 4 }
            top_mlp { hidden_units: [4] activation: "nn.LeakyReLU(negative_slope=0.2)" }""",
         refused_with="top_mlp.activation 'nn.LeakyReLU(negative_slope=0.2)' is not supported"),
    Case("variational_dropout",
         "model_config.variational_dropout (in eval each feature's slice is scaled by a learned keep "
         "probability), which the import refuses by name",
         SMALL_FEATURES, SMALL_GROUP, """
            n_mask_blocks: 1
            mask_block { reduction_ratio: 1 hidden_dim: 4 }
            top_mlp { hidden_units: [3] }""",
         model_extra="    variational_dropout { regularization_lambda: 0.01 }\n",
         refused_with="model_config.variational_dropout is not supported"),
    Case("embedding_name_suffix",
         "feature_groups.embedding_name_suffix \"v2\" (every table of the group is named <embedding_name>_v2), "
         "which the import refuses by name",
         SMALL_FEATURES, SMALL_GROUP.replace("group_type: DEEP", "group_type: DEEP\n        embedding_name_suffix: \"v2\""),
         """
            n_mask_blocks: 1
            mask_block { reduction_ratio: 1 hidden_dim: 4 }
            top_mlp { hidden_units: [3] }""",
         refused_with="feature_groups.embedding_name_suffix is not supported"),
)

PIPELINE = """\
train_input_path: "data/train.parquet"
eval_input_path: "data/eval.parquet"
model_dir: "experiments/{name}"
train_config {{
    sparse_optimizer {{ adagrad_optimizer {{ lr: 0.001 }} constant_learning_rate {{}} }}
    dense_optimizer {{ adam_optimizer {{ lr: 0.001 }} constant_learning_rate {{}} }}
    num_epochs: 1
}}
eval_config {{}}
data_config {{
    batch_size: 4
    dataset_type: ParquetDataset
    fg_mode: FG_NONE
    label_fields: "label"
}}
{features}model_config {{
{group}    mask_net {{
        mask_net_module {{{mask_net}
        }}
    }}
    losses {{ binary_cross_entropy {{}} }}
    metrics {{ auc {{}} }}
{model_extra}}}
"""


def generate(source, commit, out_root):
    """Writes every case of CASES under `out_root`; the folders written."""
    scratch = tempfile.mkdtemp(prefix="torcheasyrec_fixtures.")
    try:
        tzrec = checkout.load(source, scratch)
        return [_write_case(tzrec, case, commit, out_root, scratch) for case in CASES]
    finally:
        shutil.rmtree(scratch)


def _write_case(tzrec, case, commit, out_root, scratch):
    """Builds, randomises and scores one case; its fixture folder."""
    source_path = os.path.join(scratch, f"{case.name}.source.config")
    with open(source_path, "w") as f:
        f.write(PIPELINE.format(name=case.name, features=case.features, group=case.group, mask_net=case.mask_net,
                                model_extra=case.model_extra))
    pipeline = tzrec.config_util.load_pipeline_config(source_path)
    config_path = os.path.join(scratch, case.name, CONFIG)
    tzrec.config_util.save_message(pipeline, config_path)  # as TorchEasyRec writes model_dir/pipeline.config
    with open(config_path, "rb") as f:
        config_bytes = f.read()

    features, model, wrapper = _build(tzrec, pipeline, case.without_top_mlp)
    generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(case.name.encode()).digest()[:8], "big"))
    batches = [_batch_inputs(features, size, generator) for size in BATCH_SIZES]
    parser = tzrec.data_parser.DataParser(features, labels=list(pipeline.data_config.label_fields),
                                          mode=tzrec.constant.Mode.EVAL)
    probs = _randomise_and_score(wrapper, parser, batches, generator)
    files = {CHECKPOINT: _saved(wrapper.state_dict()), CONFIG: config_bytes}

    description = f"TorchEasyRec MaskNet rank model: {case.what}. "
    if case.without_top_mlp:
        description += WITHOUT_TOP_MLP_NOTE + " "
    description += CHECKPOINT_NOTE
    if case.refused_with:
        return fixture_writer.write_case(out_root, FRAMEWORK, commit, case.name, description, files, IMPORT_ARGS,
                                         refused_with=case.refused_with)
    layout = _group_layout(model, features)
    requests = []
    first_id = 1
    for b, (inputs, scores) in enumerate(zip(batches, probs)):
        request = _request(layout, inputs, first_id)
        candidate_ids = [c.id for c in request.candidates]
        first_id += len(candidate_ids)
        requests.append((f"TorchEasyRec batch {b}: {len(candidate_ids)} samples, one candidate each", request,
                         fixture_writer.expected_response(TASKS, candidate_ids, [[float(p)] for p in scores])))
    return fixture_writer.write_case(out_root, FRAMEWORK, commit, case.name, description + " " + REQUEST_NOTE,
                                     files, IMPORT_ARGS, cases=requests)


def _build(tzrec, pipeline, without_top_mlp):
    """(features, model, TrainWrapper) as tzrec/main.py builds them, on the CPU."""
    data_config = pipeline.data_config
    features = tzrec.main._create_features(list(pipeline.feature_configs), data_config)

    def create_model(model_config):
        return tzrec.main._create_model(model_config, features, list(data_config.label_fields),
                                        sample_weights=list(data_config.sample_weight_fields), sampler_type=None)

    if not without_top_mlp:
        model = create_model(pipeline.model_config)
    else:
        model = _build_without_top_mlp(tzrec, pipeline.model_config, create_model)
    wrapper = tzrec.model.TrainWrapper(model, device=torch.device("cpu"),
                                       mixed_precision=pipeline.train_config.mixed_precision)
    tzrec.state_dict_util.init_parameters(wrapper, torch.device("cpu"))
    wrapper.eval()
    return features, model, wrapper


def _build_without_top_mlp(tzrec, model_config, create_model):
    """The MaskNet of `model_config` (no top_mlp), with the one change.

    TorchEasyRec must fail to build it (when it no longer does, this change
    and the cases' note go). The model is built by TorchEasyRec from a copy
    of the config given a one-unit top_mlp; its mask_net_layer then becomes
    TorchEasyRec's MaskNetModule of the real, top_mlp-less config and its
    output_linear nn.Linear(mask_net_layer.output_dim(), num_class,
    bias=False): models/masknet.py with in_features taken from the module.
    """
    module_config = model_config.mask_net.mask_net_module
    if module_config.HasField("top_mlp"):
        raise ValueError("without_top_mlp: the config has a top_mlp")
    try:
        create_model(model_config)
    except IndexError:
        pass
    else:
        raise RuntimeError("TorchEasyRec now builds a MaskNet without top_mlp: build it without the change")
    buildable = copy.deepcopy(model_config)
    buildable.mask_net.mask_net_module.top_mlp.hidden_units.append(1)
    model = create_model(buildable)
    model.mask_net_layer = tzrec.masknet_module.MaskNetModule(
        model.embedding_group.group_total_dim(model.group_name), **tzrec.config_util.config_to_kwargs(module_config))
    model.output_linear = torch.nn.Linear(model.mask_net_layer.output_dim(), model._num_class, bias=False)
    return model


def _batch_inputs(features, size, generator):
    """One batch of post-feature-generation inputs for DataParser.to_batch.

    An id feature gets bags of 0..MAX_IDS ids (in a batch of several
    samples, the k-th id feature's bag of sample k is empty and of the next
    sample full), a raw feature value_dim values.
    """
    inputs = {}
    for k, feature in enumerate(f for f in features if f.is_sparse):
        lengths = torch.randint(0, MAX_IDS + 1, (size,), generator=generator)
        if size > 1:
            lengths[k % size], lengths[(k + 1) % size] = 0, MAX_IDS
        ids = torch.randint(0, feature.num_embeddings, (int(lengths.sum()),), generator=generator)
        inputs[f"{feature.name}.values"] = ids
        inputs[f"{feature.name}.lengths"] = lengths.to(torch.int32)
    for feature in features:
        if not feature.is_sparse:
            inputs[f"{feature.name}.values"] = torch.randn(size, feature.value_dim, generator=generator)
    inputs["label"] = torch.randint(0, 2, (size,), generator=generator)
    return inputs


def _randomise_and_score(wrapper, parser, batches, generator, attempts=50):
    """Draws every parameter and buffer; TorchEasyRec's probs per batch.

    Draws again while a logit is ~0 (a dead ReLU's constant), a probability
    saturates or the scores hardly differ: such a fixture could not tell a
    wrong import from a right one.
    """
    for _ in range(attempts):
        _randomise(wrapper, generator)
        probs, logits = [], []
        for inputs in batches:
            with torch.no_grad():
                _, (_, predictions, _) = wrapper(parser.to_batch(inputs))
            probs.append(predictions["probs"])
            logits.append(predictions["logits"])
        all_probs = torch.cat(probs)
        if (torch.cat(logits).abs().min() > 1e-3 and all_probs.std() > 0.05 and all_probs.min() > 0.01
                and all_probs.max() < 0.99):
            return [p.tolist() for p in probs]
    raise RuntimeError(f"no weights in {attempts} draws gave scores that differ")


def _randomise(module, generator):
    """Draws every parameter and buffer of `module` from `generator`.

    Norm scales near 1, shifts and biases mostly positive (so that ReLUs stay
    alive), BatchNorm running variances in [0.3, 2), linear weights scaled by
    their fan-in. Integer tensors that describe structure rather than weights
    (VariationalDropout.feature_dim_repeat) stay as TorchEasyRec built them.
    """
    norms = (torch.nn.LayerNorm, torch.nn.BatchNorm1d)
    drawn = set()
    with torch.no_grad():
        for prefix, child in module.named_modules():
            tensors = [(n, t, False) for n, t in child._parameters.items() if t is not None]
            tensors += [(n, t, True) for n, t in child._buffers.items() if t is not None]
            for name, tensor, is_buffer in tensors:
                key = f"{prefix}.{name}" if prefix else name
                if name == "num_batches_tracked":
                    tensor.fill_(int(torch.randint(1, 1000, (), generator=generator)))
                elif not tensor.dtype.is_floating_point:
                    continue
                elif name == "running_var":
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * 1.7 + 0.3)
                elif name == "running_mean":
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
                elif isinstance(child, norms) and name == "weight":
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                elif name == "bias":
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.8 - 0.2)
                elif isinstance(child, torch.nn.EmbeddingBag):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.8)
                elif tensor.dim() == 2:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 1.5 / tensor.shape[1] ** 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.6)
                drawn.add(key)
    undrawn = [k for k, t in module.state_dict().items() if k not in drawn and t.dtype.is_floating_point]
    if undrawn:
        raise RuntimeError(f"not randomised: {undrawn}")


def _saved(state_dict):
    """torch.save's bytes of `state_dict`."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def _group_layout(model, features):
    """(name, is_sparse) of the model's feature group, in the group's order."""
    by_name = {f.name: f for f in features}
    return [(name, by_name[name].is_sparse)
            for name in model.embedding_group.group_feature_dims(model.group_name)]


def _request(layout, inputs, first_id):
    """The RankRequest of one batch: sample i is candidate first_id + i.

    Every field is candidate-scoped, in the group's order: an id feature's
    bag goes to ids with its length in id_counts, a raw feature's values to
    dense.
    """
    request = ranker_pb2.RankRequest()
    size = len(inputs["label"])
    bags = {}
    for name, is_sparse in layout:
        if is_sparse:
            lengths = inputs[f"{name}.lengths"].tolist()
            bags[name] = inputs[f"{name}.values"].split(lengths)
    for i in range(size):
        features = request.candidates.add(id=first_id + i).features
        for name, is_sparse in layout:
            if is_sparse:
                features.ids.extend(bags[name][i].tolist())
                features.id_counts.append(len(bags[name][i]))
            else:
                features.dense.extend(inputs[f"{name}.values"][i].tolist())
    return request
