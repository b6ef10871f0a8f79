"""Stand-in for torchrec: the part TorchEasyRec's MaskNet rank model runs.

NOT torchrec. torchrec (with fbgemm_gpu) is not packaged for Debian and needs
torch 2.x; this machine has Debian's torch 1.13. TorchEasyRec builds its
embedding tables as a torchrec EmbeddingBagCollection and passes features
between its modules as torchrec's jagged and keyed tensors, so these few
classes are written here, for this purpose only, from what TorchEasyRec
needs of them:

    sparse.jagged_tensor   JaggedTensor, KeyedJaggedTensor, KeyedTensor
    modules.embedding_modules  EmbeddingBagCollection
    modules.embedding_configs  EmbeddingBagConfig, PoolingType
    types, streamable      DataType, Pipelineable

Why the numbers are the same as torchrec's: an unsharded torchrec
EmbeddingBagCollection on CPU holds one torch.nn.EmbeddingBag per table
(mode "sum" or "mean") and pools each feature's ids with it; the stand-in
does exactly that, with the same module names, so the state_dict keys are
torchrec's (`embedding_bags.<table>.weight`). The keyed tensors only move
and slice values (no arithmetic). Every other torchrec module TorchEasyRec
imports is a placeholder that raises if used (../placeholders.py).
"""

from torchrec.modules.embedding_configs import EmbeddingBagConfig  # noqa: F401
from torchrec.modules.embedding_configs import EmbeddingConfig  # noqa: F401
from torchrec.modules.embedding_configs import PoolingType  # noqa: F401
from torchrec.modules.embedding_modules import EmbeddingBagCollection  # noqa: F401
from torchrec.modules.embedding_modules import EmbeddingCollection  # noqa: F401
from torchrec.sparse.jagged_tensor import JaggedTensor  # noqa: F401
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: F401
from torchrec.sparse.jagged_tensor import KeyedTensor  # noqa: F401
from torchrec.types import DataType  # noqa: F401

__all__ = [
    "DataType", "EmbeddingBagCollection", "EmbeddingBagConfig",
    "EmbeddingCollection", "EmbeddingConfig", "JaggedTensor",
    "KeyedJaggedTensor", "KeyedTensor", "PoolingType",
]
