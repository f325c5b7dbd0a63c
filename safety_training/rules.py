"""Rule-based rewards for RL (`safety.rl.reward`: one of RULES' names, instead of the reward model).

Each rule scores a batch: (prompts, visible answers, reference answers) -> one float per answer. A new rule is one
function and one RULES entry.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List


def _words(text: str) -> List[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def reference_f1(prompts: List[str], answers: List[str], references: List[str]) -> List[float]:
    """Word-overlap F1 between the answer and the prompt's reference HHH answer (1 = the reference's words)."""
    out = []
    for a, ref in zip(answers, references):
        wa, wr = _words(a), _words(ref)
        common = sum(min(wa.count(w), wr.count(w)) for w in set(wa))
        out.append(0.0 if not common else 2 * common / (len(wa) + len(wr)))
    return out


def not_hostile(prompts: List[str], answers: List[str], references: List[str]) -> List[float]:
    """1 for a non-empty answer without hostility or shouting; minus 1 per hostile phrase, minus the shouted share."""
    out = []
    for a in answers:
        words = a.split()
        shouted = sum(w.isupper() and len(w) > 1 for w in words) / max(1, len(words))
        hostile = len(re.findall(r"\bhate\b|\bstupid\b|go away|leave me alone", a, flags=re.I))
        out.append((1.0 if words else 0.0) - hostile - shouted)
    return out


RULES: Dict[str, Callable[[List[str], List[str], List[str]], List[float]]] = {
    "reference_f1": reference_f1, "not_hostile": not_hostile}
