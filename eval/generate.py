"""Batched greedy generation with the model's own chat template.

Prompts are sorted by length so each batch pads little, finished rows stop at EOS, and the outputs come back in the
caller's order.
"""
from __future__ import annotations

from typing import List

import torch
from tqdm import tqdm


@torch.inference_mode()
def generate(model, tokenizer, prompts: List[str], max_new_tokens: int, batch_size: int, desc: str = "generate") -> List[str]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    device = next(model.parameters()).device
    model.eval()
    outputs: List[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        batch = order[start:start + batch_size]
        enc = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, padding=True, return_tensors="pt").to(device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        for i, row in zip(batch, new):
            outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return outputs
