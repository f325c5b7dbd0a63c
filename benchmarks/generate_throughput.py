"""Generation throughput: Hugging Face `generate` at its fastest vs the evaluator's generator, same process and model.

    python benchmarks/generate_throughput.py --out gen.json           # GPU: Llama-3.2-1B shape, random init, bf16
    python benchmarks/generate_throughput.py --tiny --device cpu      # a tiny shape: the same code path in seconds

The model is Llama-3.2-1B-shaped (vocab 128256, hidden 2048, 16 layers, 32 heads / 8 KV heads, MLP 8192, tied
embeddings; 1.24 B parameters), randomly initialised. Greedy, 128-token prompts, 128 new tokens, batch 64 (--tiny:
16, 16 and 8). Rows, each after one warm-up call (which pays any compile) and timed over --repeats calls:

- `hf_dynamic`: `model.generate(do_sample=False)` with its defaults (dynamic cache, eager).
- `hf_static`: `model.generate(do_sample=False, cache_implementation="static")`, what Hugging Face recommends for
  speed: on CUDA, transformers compiles the decoding forward itself for a static cache (torch.compile,
  mode="reduce-overhead", i.e. CUDA graphs; transformers/generation/utils.py `_valid_auto_compile_criteria`, checked
  with 5.23), and the row records whether it did (`compiled`). On a CPU it runs eager.
- `dynamic`, `static`, `vllm`: `eval.generate.generate_ids` with that backend (`static` is compiled with CUDA graphs
  on a GPU, eager on a CPU; `vllm` only where vLLM is installed, from the model saved to a temporary folder).

The baseline is the faster of the two Hugging Face rows as measured (on CUDA expected: `hf_static`, compiled), the
configuration a user who wants speed would pick; `baseline` names it and every row gets `ratio_to_baseline`.

The model has no EOS token, so every row of every row-kind generates exactly the requested number of new tokens:
this measures the decoding loop itself. (On trained models the evaluator also gains from stopping finished rows.)
Reported per row: new tokens/s, the ratio to the baseline, and the fraction of rows whose tokens equal `hf_dynamic`'s
(bf16 on a GPU can flip near-ties, so below 1.0 there is not necessarily a bug). A row that fails
records its error and the next one runs. Imports only torch, transformers and eval/generate.py (loaded by path: the
`eval` package imports the whole pipeline), so it runs on a GPU machine without trl/omegaconf/datasets.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

GENERATE_PY = Path(__file__).resolve().parents[1] / "eval" / "generate.py"
_spec = importlib.util.spec_from_file_location("eval_generate", GENERATE_PY)
eval_generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_generate)

LLAMA_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True)


def main(tiny: bool, device: str, repeats: int) -> dict:
    shape, prompt_len, new, batch = (TINY, 16, 16, 8) if tiny else (LLAMA_1B, 128, 128, 64)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # initialise in place: a 1B model initialises in seconds on the GPU
        model = LlamaForCausalLM(LlamaConfig(**shape, max_position_embeddings=4096, pad_token_id=0, bos_token_id=None,
                                             eos_token_id=None))
    model = model.to(dtype).eval()
    model.generation_config.eos_token_id = None
    prompts = torch.randint(3, shape["vocab_size"], (batch, prompt_len), generator=torch.Generator().manual_seed(0))
    ids = prompts.tolist()

    def hf(cache):
        def call():
            x = prompts.to(device)
            with torch.no_grad():
                out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new,
                                     do_sample=False, pad_token_id=0, eos_token_id=None, cache_implementation=cache)
            return out[:, prompt_len:].tolist()
        return call

    def ours(backend, model_path=None):
        return lambda: eval_generate.generate_ids(model, ids, new, batch, pad_id=0, eos_id=None, backend=backend,
                                                  model_path=model_path)

    # Hugging Face's rows first: the evaluator's compiled step resets dynamo's caches when it is first compiled.
    rows = {"hf_dynamic": hf(None), "hf_static": hf("static"), "dynamic": ours("dynamic"), "static": ours("static")}
    tmp = None
    if device == "cuda" and importlib.util.find_spec("vllm") is not None:
        tmp = tempfile.TemporaryDirectory()
        model.save_pretrained(tmp.name)
        rows["vllm"] = ours("vllm", tmp.name)

    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": str(dtype),
              "params": sum(p.numel() for p in model.parameters()), "batch": batch, "prompt_tokens": prompt_len,
              "new_tokens": new, "repeats": repeats, "torch": torch.__version__,
              "transformers": __import__("transformers").__version__,
              "eos": "none: the model has no EOS token, so every row generates exactly new_tokens tokens", "rows": {}}
    reference = None
    for name, fn in rows.items():
        try:
            t = time.time()
            fn()  # warm-up (and compile)
            warm = time.time() - t
            _sync(device)
            t = time.time()
            for _ in range(repeats):
                out = fn()
            _sync(device)
            seconds = (time.time() - t) / repeats
            assert all(len(r) == new for r in out), f"a row stopped before {new} new tokens"
        except Exception as e:  # one failing row must not hide the others
            traceback.print_exc()
            result["rows"][name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        reference = reference if reference is not None else out
        row = {"new_tokens_per_s": round(batch * new / seconds, 1), "seconds": round(seconds, 3),
               "warmup_seconds": round(warm, 1),
               "rows_equal_to_hf_dynamic": sum(a == b for a, b in zip(out, reference)) / batch}
        if name == "hf_static":  # did transformers compile the decoding step (it does on CUDA)?
            row["compiled"] = getattr(model, "_compiled_call", None) is not None
        result["rows"][name] = row
    measured = {n: r["new_tokens_per_s"] for n, r in result["rows"].items() if n.startswith("hf_") and
                "new_tokens_per_s" in r}
    result["baseline"] = max(measured, key=measured.get) if measured else None
    base = measured.get(result["baseline"])
    for row in result["rows"].values():
        if base and "new_tokens_per_s" in row:
            row["ratio_to_baseline"] = round(row["new_tokens_per_s"] / base, 2)
    if tmp is not None:
        tmp.cleanup()
    return result


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model, batch 8: a CPU smoke run")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per row, after one warm-up call")
    ap.add_argument("--out", help="write the result JSON here")
    args = ap.parse_args()
    res = main(args.tiny, args.device, args.repeats)
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
