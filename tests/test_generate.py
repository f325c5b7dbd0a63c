"""The evaluator's generator (eval/generate.py): every backend's greedy output equals `model.generate`, sampling is
seeded, and the throughput benchmark's --tiny run reports both backends against plain `generate`.

A tiny random Llama (vocab 100, hidden 32, 2 layers) and a word-level tokenizer are built here; eval/generate.py is
loaded by path, as the benchmark does (the `eval` package imports the whole pipeline, which the GPU machine cannot).
Runs in seconds on a CPU; the CUDA test (compiled static decoding) runs only where a GPU is present.
"""
import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("eval_generate_under_test", REPO / "eval" / "generate.py")
G = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(G)

NEW = 20
LENGTHS = (3, 11, 6, 14, 8, 2, 9)  # 7 prompts, batches of 3: sorted batches of 3, 3 and a short last one of 1


def tiny_model(device="cpu", seed=0):
    torch.manual_seed(seed)
    # initializer_range 0.3 (not 0.02): attention sharp enough that a wrong position or mask changes the tokens
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, pad_token_id=0, eos_token_id=1)
    return LlamaForCausalLM(config).to(device).eval()


def prompts_ids():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 100, (n,), generator=g).tolist() for n in LENGTHS]


def reference(model, ids, batch_size, eos_id):
    """`model.generate(do_sample=False)` on the evaluator's batches, cut after the first EOS."""
    out = [None] * len(ids)
    for batch, x, mask in G._batches(ids, batch_size, 0, x_device(model), ""):
        new = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
                             eos_token_id=eos_id)[:, x.shape[1]:].tolist()
        for i, row in zip(batch, new):
            out[i] = row[:row.index(eos_id) + 1] if eos_id in row else row
    return out


def x_device(model):
    return next(model.parameters()).device


def liked_eos(model, ids):
    """A token the model emits mid-way in some rows but not in all: as EOS, some rows stop early and others do not."""
    free = reference(model, ids, 3, eos_id=None)
    for tok, _ in Counter(t for row in free for t in row[1:NEW - 2]).most_common():
        rows = sum(tok in row for row in free)
        if 0 < rows < len(free):
            return tok
    raise AssertionError("no token appears in only some rows")


@pytest.mark.parametrize("backend", ["dynamic", "static"])
def test_greedy_equals_model_generate_with_early_eos(backend):
    model, ids = tiny_model(), prompts_ids()
    eos = liked_eos(model, ids)
    expected = reference(model, ids, 3, eos)
    assert any(len(r) < NEW for r in expected) and any(len(r) == NEW for r in expected)  # the test means something
    assert G.generate_ids(model, ids, NEW, 3, pad_id=0, eos_id=eos, backend=backend) == expected
    # without EOS every row runs to the end, still token for token
    assert G.generate_ids(model, ids, NEW, 3, pad_id=0, eos_id=None, backend=backend) == reference(model, ids, 3, None)


def test_static_backend_uses_a_static_cache(monkeypatch):
    built = []

    class Spy(G.StaticCache):
        def __init__(self, *a, **k):
            built.append(k["max_cache_len"])
            super().__init__(*a, **k)

    monkeypatch.setattr(G, "StaticCache", Spy)
    G.generate_ids(tiny_model(), prompts_ids(), NEW, 3, pad_id=0, eos_id=None, backend="static")
    assert built == [128, 128, 128]  # one per batch; prompt + 20 new tokens rounded up to 128 slots


def tiny_tokenizer(eos: int):
    words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(3, 100)]
    tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token=words[eos])
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return fast


@pytest.mark.parametrize("backend", ["dynamic", "static"])
def test_text_api_equals_plain_generate(backend):
    model, ids = tiny_model(), prompts_ids()
    tok = tiny_tokenizer(liked_eos(model, ids))
    prompts = [" ".join(f"w{t}" for t in row) for row in ids]
    ours = G.generate(model, tok, prompts, NEW, 3, backend=backend)
    assert ours == G.plain_generate(model, tok, prompts, NEW, 3)
    assert len({len(o.split()) for o in ours}) > 1  # some answers stopped at EOS, others did not


@pytest.mark.parametrize("backend", ["dynamic", "static"])
def test_sampling_is_seeded(backend):
    model, ids = tiny_model(), prompts_ids()

    def sample(seed):
        return G.generate_ids(model, ids, NEW, 3, pad_id=0, eos_id=None, temperature=1.0, seed=seed, backend=backend)

    a = sample(1)
    assert a == sample(1) and a != sample(2)
    assert a != G.generate_ids(model, ids, NEW, 3, pad_id=0, eos_id=None, backend=backend)  # not greedy


def test_backend_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert G.resolve_backend("auto", cpu, None) == "dynamic"
    assert G.resolve_backend("auto", cuda, None) == "static"
    with pytest.raises(ValueError, match="expected one of"):
        G.resolve_backend("fast", cpu, None)
    if importlib.util.find_spec("vllm") is None:
        assert G.resolve_backend("auto", cuda, str(REPO)) == "static"
        with pytest.raises(ValueError, match="vLLM"):
            G.resolve_backend("vllm", cuda, str(REPO))


def test_benchmark_tiny_runs_without_the_pipeline_dependencies(tmp_path):
    # The GPU machine has torch and transformers but not trl/omegaconf/datasets: make them unimportable here too.
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("trl", "omegaconf", "datasets"):
        (stubs / f"{name}.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    out = tmp_path / "gen.json"
    env = {**os.environ, "PYTHONPATH": str(stubs), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generate_throughput.py"), "--tiny", "--device",
                           "cpu", "--repeats", "1", "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert {"hf_dynamic", "hf_static", "dynamic", "static"} <= set(rows)
    assert res["baseline"] in ("hf_dynamic", "hf_static")  # the faster Hugging Face setting, as measured
    for name in ("hf_dynamic", "hf_static", "dynamic", "static"):
        assert "error" not in rows[name], rows[name]
        assert rows[name]["new_tokens_per_s"] > 0 and rows[name]["ratio_to_baseline"] > 0
        assert rows[name]["rows_equal_to_hf_dynamic"] == 1.0  # float32 on a CPU: identical tokens
    assert res["new_tokens"] == 16 and "no EOS" in res["eos"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled static decoding needs CUDA")
def test_compiled_static_on_cuda_equals_model_generate():
    ids = prompts_ids()
    for seed in (0, 1):  # a second model: compiled graphs are rebuilt for it
        model = tiny_model("cuda", seed)
        eos = liked_eos(model, ids)
        expected = reference(model, ids, 3, eos)
        for _ in range(2):  # the second call replays the CUDA graphs recorded by the first
            assert G.generate_ids(model, ids, NEW, 3, pad_id=0, eos_id=eos, backend="auto") == expected
        assert getattr(model, "_eval_decode_step", None) is not None  # the compiled path actually ran
        sampled = G.generate_ids(model, ids, NEW, 3, pad_id=0, eos_id=None, temperature=1.0, seed=3)
        assert sampled == G.generate_ids(model, ids, NEW, 3, pad_id=0, eos_id=None, temperature=1.0, seed=3)
        with torch.no_grad():  # weights changed in place (as eval/perturb.py does): the graphs read the new ones
            for p in model.parameters():
                p.mul_(1.3)
        assert G.generate_ids(model, ids, NEW, 3, pad_id=0, eos_id=None) == reference(model, ids, 3, None)
