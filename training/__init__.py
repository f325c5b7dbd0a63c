"""Backdoored models: tokenizer + tiny base ladder (or hub models), then backdoor SFT per size x variant."""
from training.build import run

__all__ = ["run"]
