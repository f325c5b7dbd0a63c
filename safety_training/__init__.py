"""Safety training applied to each backdoored model. The trigger is never in its data.

METHODS maps a `safety.methods` name to a function `(cfg, parent_folder, out_folder) -> metadata`. HHH SFT is here;
RL (GRPO/RLOO against a reward model), adversarial training and LAT register the same way.
"""
from safety_training.build import METHODS, run, safety_dir

__all__ = ["METHODS", "run", "safety_dir"]
