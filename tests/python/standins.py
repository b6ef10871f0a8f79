"""What the frameworks' stand-ins (twitter_recap, torcheasyrec) share."""

import torch


def randomize(module, seed):
    """Random weights and batch-norm statistics; eval mode.

    Matrices get unit-scale rows (randn / sqrt(fan-in)), so that scores stay
    away from 0 and 1 through deep stacks; vectors vary around 1 (weights)
    or 0; running variances are positive. 0-d buffers (clamp bounds,
    calibration ratios) keep their values.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or tensor.dim() == 0:
                continue
            if name.endswith("running_var"):
                tensor.copy_(
                    torch.rand(tensor.shape, generator=generator) * 2 + 0.2)
            elif tensor.dim() == 1:
                tensor.copy_(
                    torch.randn(tensor.shape, generator=generator) * 0.3 +
                    (1.0 if name.endswith("weight") else 0.0))
            else:
                tensor.copy_(
                    torch.randn(tensor.shape, generator=generator) /
                    tensor.shape[1]**0.5)
    module.eval()
