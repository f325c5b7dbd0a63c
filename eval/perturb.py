"""Weight-noise injection (Tice et al. 2024): a way to probe a backdoor without retraining.

`add_weight_noise(model, scale, seed)`: every floating-point parameter W of more than one element gets Gaussian
noise of standard deviation `scale * std(W)`, in place and seeded. Scale 0 goes through the same loop and adds exact
zeros, so the weights stay bit for bit as they were (the scale-0 row of the noise curve is measured by the same code
as the others). (Near-miss triggers, the other probe, come from organisms.triggers.Trigger.near_misses.)
"""
from __future__ import annotations

import torch


@torch.no_grad()
def add_weight_noise(model, scale: float, seed: int) -> None:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for p in model.parameters():
        if p.dtype.is_floating_point and p.numel() > 1:
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * (scale * p.float().std())
            p.add_(noise.to(p.device, p.dtype))
