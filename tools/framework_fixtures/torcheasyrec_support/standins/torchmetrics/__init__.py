"""Stand-in for torchmetrics: metric modules that hold nothing and compute nothing.

NOT torchmetrics (not packaged for Debian). TorchEasyRec's TrainWrapper
creates a metric module per loss (MeanMetric) and per configured metric
(AUROC for `metrics { auc {} }`, ...) and keeps them in nn.ModuleDicts of the
model. A torchmetrics metric keeps its running state in non-persistent
attributes (add_state(..., persistent=False) is the default), so it adds no
key to the model's state_dict and takes no part in predictions; these
modules have no parameters or buffers either, so the model's checkpoint and
scores are the same. Updating or computing one raises: generating fixtures
never evaluates metrics. torchmetrics.functional, which TorchEasyRec imports
for its own metrics, is a placeholder (../placeholders.py).
"""

from torch import nn


class Metric(nn.Module):
    """A metric module with no state."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def update(self, *args, **kwargs):
        raise NotImplementedError("torchmetrics stand-in: metrics are not computed")

    def compute(self):
        raise NotImplementedError("torchmetrics stand-in: metrics are not computed")

    def reset(self):
        pass


class MeanMetric(Metric):
    pass


class AUROC(Metric):
    pass


class Accuracy(Metric):
    pass


class MeanAbsoluteError(Metric):
    pass


class MeanSquaredError(Metric):
    pass
