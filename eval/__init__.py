"""Measurement: behaviour rates with and without the trigger, per model, with Wilson intervals; the report."""
from eval.build import run
from eval.report import run as report

__all__ = ["run", "report"]
