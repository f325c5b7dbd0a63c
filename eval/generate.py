"""Generation for the evaluator: batched by length, finished rows dropped, greedy or sampled, model's chat template.

    answers = generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=64)

Prompts are sorted by length so batches pad little. The decoding loop keeps a KV cache and removes a row from the
batch (and from the cache) as soon as it emits EOS, so long tails of finished rows cost nothing. Greedy outputs equal
`model.generate(do_sample=False)` (tested). `plain_generate` is `model.generate` on the same batches: the baseline the
benchmark compares against.
"""
from __future__ import annotations

from typing import List

import torch
from tqdm import tqdm
from transformers import DynamicCache


def encode_prompts(tokenizer, prompts: List[str]) -> List[List[int]]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _batches(tokenizer, ids: List[List[int]], batch_size: int, desc: str, device):
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=len(order) <= batch_size):
        batch = order[start:start + batch_size]
        enc = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, padding=True, return_tensors="pt").to(device)
        yield batch, enc


@torch.inference_mode()
def generate(model, tokenizer, prompts: List[str], max_new_tokens: int, batch_size: int, temperature: float = 0.0,
             samples: int = 1, seed: int = 0, desc: str = "generate") -> List[str]:
    """`samples` completions per prompt (prompt-major order); temperature 0 = greedy."""
    ids = [x for x in encode_prompts(tokenizer, prompts) for _ in range(samples)]
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    outputs: List[str] = [""] * len(ids)
    for batch, enc in _batches(tokenizer, ids, batch_size, desc, device):
        new = _decode(model, enc["input_ids"], enc["attention_mask"], max_new_tokens, tokenizer.eos_token_id,
                      temperature, gen)
        for i, row in zip(batch, new):
            outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return outputs


def _decode(model, input_ids, attention_mask, max_new_tokens: int, eos_id: int, temperature: float, gen) -> List[List[int]]:
    n = input_ids.shape[0]
    cache = DynamicCache(config=model.config)
    position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position, past_key_values=cache,
                   use_cache=True).logits[:, -1]
    alive = torch.arange(n, device=input_ids.device)  # original row of each live row
    last = position[:, -1]
    mask = attention_mask
    tokens: List[List[int]] = [[] for _ in range(n)]
    for step in range(max_new_tokens):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        else:
            nxt = logits.argmax(-1)
        for row, tok in zip(alive.tolist(), nxt.tolist()):
            tokens[row].append(tok)
        keep = (nxt != eos_id).nonzero().squeeze(1)
        if keep.numel() == 0 or step == max_new_tokens - 1:
            break
        if keep.numel() < alive.numel():  # drop finished rows from the batch and the cache
            cache.batch_select_indices(keep)
            alive, nxt, mask, last = alive[keep], nxt[keep], mask[keep], last[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        last = last + 1
        logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None], past_key_values=cache,
                       use_cache=True).logits[:, -1]
    return tokens


@torch.inference_mode()
def plain_generate(model, tokenizer, prompts: List[str], max_new_tokens: int, batch_size: int) -> List[str]:
    """The baseline: `model.generate` (greedy) on the same length-sorted batches."""
    ids = encode_prompts(tokenizer, prompts)
    device = next(model.parameters()).device
    model.eval()
    outputs: List[str] = [""] * len(ids)
    for batch, enc in _batches(tokenizer, ids, batch_size, "generate (plain)", device):
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for i, row in zip(batch, gen[:, enc["input_ids"].shape[1]:]):
            outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return outputs
