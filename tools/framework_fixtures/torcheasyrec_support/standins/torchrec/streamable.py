"""Stand-in for torchrec.streamable (see ../__init__.py).

TorchEasyRec's Batch derives from Pipelineable, the interface of objects a
training pipeline moves between devices; Batch implements it itself, and
nothing here moves between devices.
"""


class Pipelineable:
    """Something with `to(device, non_blocking)` and `record_stream(stream)`."""
