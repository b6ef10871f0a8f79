"""Seeded random values for every parameter and buffer of a FuxiCTR model.

An untrained FuxiCTR MaskNet scores everything alike (embeddings N(0, 1e-4),
biases 0, LayerNorms 1 and 0), which would let a wrong import pass. These
values make every tensor matter and keep the scores spread out.
"""

import torch
from torch import nn


def randomize(model, seed):
    """Overwrites every parameter and buffer of `model`, from `seed` alone.

    nn.Embedding N(0, 0.6), its padding_idx row kept at zero (FuxiCTR's
    nn.Embedding(padding_idx=...) starts it at zero and no gradient reaches
    it, so a trained model has it zero); a numeric feature's nn.Linear(1, d)
    N(0, 1); other nn.Linear weights N(0, 1.6 / sqrt(fan_in)), biases
    N(0, 0.3); nn.LayerNorm weights U(0.5, 1.5), biases N(0, 0.3). A module
    shared by two names (share_embedding) is written once. Raises TypeError
    for a module with tensors of another kind, and RuntimeError when a
    tensor of state_dict() was left as it was.
    """
    generator = torch.Generator().manual_seed(seed)
    written = set()

    def normal(tensor, std):
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)

    def uniform(tensor, low, high):
        tensor.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator))

    with torch.no_grad():
        for name, module in model.named_modules():
            own = [t for _, t in module.named_parameters(recurse=False)]
            own += [t for _, t in module.named_buffers(recurse=False)]
            if not own or all(id(t) in written for t in own):
                continue
            if isinstance(module, nn.Embedding):
                normal(module.weight, 0.6)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.Linear):
                fan_in = module.in_features
                normal(module.weight, 1.0 if fan_in == 1 else 1.6 / fan_in ** 0.5)
                if module.bias is not None:
                    normal(module.bias, 0.3)
            elif isinstance(module, nn.LayerNorm):
                uniform(module.weight, 0.5, 1.5)
                normal(module.bias, 0.3)
            else:
                raise TypeError(f"{name}: no random values for a {type(module).__name__}")
            written.update(id(t) for t in own)
    left = [k for k, t in model.state_dict(keep_vars=True).items() if id(t) not in written]
    if left:
        raise RuntimeError(f"not randomised: {', '.join(left)}")
