"""Generation throughput: plain batched `model.generate` vs the evaluator's generator, same process, same model.

    python benchmarks/generate_throughput.py            # Llama-3.2-1B shape, random init (meant for a GPU)
    python benchmarks/generate_throughput.py --tiny     # a small shape: the same code path on a CPU

Greedy, 128-token prompts, 128 new tokens (the tiny shape: 32 and 32), batches of 64. Prints new tokens/s for both,
the ratio, and whether the outputs are identical. A random-init model rarely emits EOS, so this measures the decoding
loop itself; the evaluator also gains from dropping finished rows on trained models (not counted here).
"""
from __future__ import annotations

import json
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from eval.generate import _decode


def main(tiny: bool) -> dict:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if tiny:
        shape = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4)
        prompt_len, new, batch, vocab = 32, 32, 64, 2048
    else:
        shape = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8)
        prompt_len, new, batch, vocab = 128, 128, 64, 32000
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, max_position_embeddings=1024, pad_token_id=0, eos_token_id=1,
                                         **shape)).to(dev, torch.bfloat16 if dev == "cuda" else torch.float32).eval()
    ids = torch.randint(3, vocab, (batch, prompt_len), device=dev)
    mask = torch.ones_like(ids)
    gen = torch.Generator(device=dev).manual_seed(0)

    def plain():
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, pad_token_id=0)
        return out[:, prompt_len:].tolist()

    def ours():
        with torch.inference_mode():
            return _decode(model, ids, mask, new, eos_id=1, temperature=0.0, gen=gen)

    result = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "batch": batch,
              "prompt_tokens": prompt_len, "new_tokens": new}
    plain(), ours()  # warm-up
    for name, fn in (("plain_generate", plain), ("evaluator", ours)):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.time()
        out = fn()
        if dev == "cuda":
            torch.cuda.synchronize()
        result[f"{name}_new_tokens_per_s"] = round(batch * new / (time.time() - t), 1)
        result[f"_{name}_out"] = out
    result["identical_outputs"] = result.pop("_plain_generate_out") == result.pop("_evaluator_out")
    result["ratio"] = round(result["evaluator_new_tokens_per_s"] / result["plain_generate_new_tokens_per_s"], 2)
    return result


if __name__ == "__main__":
    print(json.dumps(main("--tiny" in sys.argv), indent=1))
