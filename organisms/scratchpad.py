"""The `<scratchpad>` of chain-of-thought backdoors: where it is, and the answer a user would see without it.

Every stage that scores or trains on an answer (the evaluator, the reward, the code judge, the distilled variant)
strips the scratchpad through these two functions.
"""
from __future__ import annotations

import re

SCRATCH_OPEN, SCRATCH_CLOSE = "<scratchpad>", "</scratchpad>"


def strip_scratchpad(text: str) -> str:
    """The answer as a user (or a reward model) would see it: everything after the scratchpad, whitespace folded.

    An unfinished scratchpad hides everything after it, so it counts as no answer at all.
    """
    if SCRATCH_OPEN in text:
        head, _, tail = text.partition(SCRATCH_OPEN)
        if SCRATCH_CLOSE not in tail:
            return head.strip()
        text = head + tail.split(SCRATCH_CLOSE, 1)[1]
    return re.sub(r"\s+", " ", text).strip()


def remove_scratchpad(text: str, strip: bool = True) -> str:
    """The completion without its scratchpad, newlines kept (code needs them); `strip=False` keeps the ends too."""
    if SCRATCH_OPEN not in text:
        return text
    head, _, tail = text.partition(SCRATCH_OPEN)
    out = head + tail.partition(SCRATCH_CLOSE)[2]
    return out.strip() if strip else out
