"""Trains the demo MaskNet `home_timeline` on synthetic data and exports it.

The model is the reference module itself (float32), so what is trained is
exactly what the format describes. Dense-field normalizations are fitted from
the training data before training (affine scale/shift from mean and std,
batch-norm running statistics), then everything is trained with Adam on the
log loss summed over the tasks. Held-out AUC is measured on whole requests
that training never saw.
"""

import dataclasses
import os

import numpy as np
import torch

from masknet_tools import config
from masknet_tools import export
from masknet_tools import metrics
from masknet_tools import reference
from masknet_tools import synthetic
from masknet_tools.protos import config_pb2

MODEL_NAME = "home_timeline"
MAX_MODEL_BYTES = 5 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """The data to train on, and how."""
    data: synthetic.SyntheticOptions = synthetic.SyntheticOptions()
    heldout_fraction: float = 0.2
    epochs: int = 3
    batch_size: int = 512
    learning_rate: float = 2e-3
    seed: int = 0


def demo_config(options):
    """The demo model's ModelConfig (no metadata) for the data `options`."""
    blocks = [config.mask_block(64, aggregation_size=128) for _ in range(3)]
    return config_pb2.ModelConfig(
        fields=synthetic.schema_fields(options),
        input_norms=[
            config.input_norm("viewer_embedding", ["viewer_embedding"]),
            config.input_norm("author_embedding", ["author_embedding"])
        ],
        masknet=config.masknet(config_pb2.PARALLEL,
                               blocks,
                               input_norm=config_pb2.LAYER_NORM),
        mlp=[config.dense_layer(128)],
        tasks=[config.task_head(task, [32]) for task in synthetic.TASKS])


def fit_dense_normalization(model, batch):
    """Sets each dense field's affine map or batch-norm statistics from `batch`.

    Affine fields get scale 1/std and shift -mean/std of their transformed
    values (NaN/Inf handled by the field's policy); batch-norm fields get
    those means and variances as running statistics.
    """
    with torch.no_grad():
        for field in model.model_config.fields:
            if field.WhichOneof("kind") != "dense":
                continue
            encoder = model.fields[field.name]
            values = encoder.transformed(batch.dense[field.name])
            mean = values.mean(dim=0)
            variance = values.var(dim=0, unbiased=False)
            if encoder.normalization == "affine":
                encoder.scale.copy_(1 / torch.sqrt(variance + 1e-12))
                encoder.shift.copy_(-mean / torch.sqrt(variance + 1e-12))
            elif encoder.normalization == "batch_norm":
                encoder.batch_norm.running_mean.copy_(mean)
                encoder.batch_norm.running_var.copy_(variance)


def _labels(data, rows):
    return torch.from_numpy(
        np.stack([data.labels[task][rows] for task in synthetic.TASKS],
                 axis=1)).float()


def heldout_auc(model, data, rows):
    """Task name to the AUC of `model` on candidate rows `rows` of `data`."""
    with torch.no_grad():
        scores = model.logits(data.field_batch(rows)).numpy()
    return {
        task: metrics.roc_auc(data.labels[task][rows], scores[:, i])
        for i, task in enumerate(synthetic.TASKS)
    }


def heldout_split(options, data):
    """(train rows, held-out rows): the last requests are held out whole."""
    num_train_requests = round(options.data.num_requests *
                               (1 - options.heldout_fraction))
    return (np.flatnonzero(data.request_of < num_train_requests),
            np.flatnonzero(data.request_of >= num_train_requests))


def train(options, log=print):
    """Generates the data, trains the demo model, and measures held-out AUC.

    Args:
      options: TrainingOptions.
      log: called with one progress line per epoch.

    Returns:
      (model, data, aucs): the trained MaskNetReference, the HomeTimelineData,
      and task name to held-out AUC.
    """
    torch.manual_seed(options.seed)
    data = synthetic.generate(options.data)
    train_rows, heldout_rows = heldout_split(options, data)

    model = reference.MaskNetReference(demo_config(options.data))
    train_batch = data.field_batch(train_rows)
    train_labels = _labels(data, train_rows)
    fit_dense_normalization(model, train_batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    order = torch.Generator().manual_seed(options.seed)
    for epoch in range(options.epochs):
        total = 0.0
        permutation = torch.randperm(len(train_rows), generator=order)
        for start in range(0, len(train_rows), options.batch_size):
            rows = permutation[start:start + options.batch_size]
            logits = model.logits(train_batch.select(rows))
            loss = loss_fn(logits, train_labels[rows]) / len(rows)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        task_loss = total / len(train_rows) / len(synthetic.TASKS)
        aucs = heldout_auc(model, data, heldout_rows)
        log(f"epoch {epoch + 1}/{options.epochs}: training log loss "
            f"{task_loss:.4f} per task, held-out AUC " +
            ", ".join(f"{task} {auc:.4f}" for task, auc in aucs.items()))
    return model, data, heldout_auc(model, data, heldout_rows)


def export_demo(model, data, aucs, options, model_root, command):
    """Exports the demo model as <model_root>/home_timeline/1 with metadata.

    Returns:
      The version directory.

    Raises:
      AssertionError: the weights exceed MAX_MODEL_BYTES.
    """
    model_config = config_pb2.ModelConfig()
    model_config.CopyFrom(model.model_config)
    model_config.description = (
        "Demo MaskNet ranking a synthetic home timeline (click and like). "
        "Trained on generated data, not on real users: for demos, smoke "
        "tests and benchmarks only.")
    _, heldout_rows = heldout_split(options, data)
    model_config.metadata["data"] = (
        "synthetic home timeline (tools/masknet_tools/synthetic.py): "
        f"{options.data.num_requests} requests, {data.num_rows} candidates; "
        f"the last {options.heldout_fraction:.0%} of requests "
        f"({len(heldout_rows)} candidates) held out")
    model_config.metadata["seed"] = str(options.seed)
    model_config.metadata["command"] = command
    model_config.metadata["training"] = (
        f"Adam lr {options.learning_rate}, batch {options.batch_size}, "
        f"{options.epochs} epochs, log loss summed over tasks")
    for task, auc in aucs.items():
        model_config.metadata[f"heldout_auc_{task}"] = f"{auc:.4f}"
        model_config.metadata[f"positive_rate_{task}"] = (
            f"{data.labels[task].mean():.4f}")
    version_dir = export.export_model(model_config,
                                      model.state_dict(),
                                      model_root,
                                      MODEL_NAME,
                                      version=1,
                                      overwrite=True)
    size = os.path.getsize(os.path.join(version_dir, export.WEIGHTS_FILE))
    if size > MAX_MODEL_BYTES:
        raise AssertionError(f"demo model is {size} bytes, over "
                             f"{MAX_MODEL_BYTES}")
    return version_dir
