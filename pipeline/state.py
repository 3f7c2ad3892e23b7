"""What ``--output`` already holds, read before a run: recovery, done identities, recompute.

A row's identity is (clip_id, method, config_hash, weights_sha256); its metrics row is its
commit record (``transforms.sink``). Everything here reads only identity columns, never maps.
Run on the driver, before the pipeline starts; one run per ``--output`` at a time.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from collections.abc import Mapping

from apache_beam.io.filesystems import FileSystems

from pipeline.outputs import iter_tables, one_line, read_parquet, table_files
from transforms.sink import INPROGRESS, OutputPaths, partition_dir

IDENTITY = ["clip_id", "config_hash", "weights_sha256"]  # + the method partition
log = logging.getLogger(__name__)


def _relative(table: str, path: str) -> str:
    return path[len(table):].lstrip("/")


def _mkdirs(directory: str) -> None:
    try:
        FileSystems.mkdirs(directory)
    except OSError:  # already there (object stores have no directories to make)
        pass


def _delete(paths: list[str]) -> None:
    if paths:
        FileSystems.delete(paths)


def leftover_temporaries(out: OutputPaths) -> list[str]:
    """Files a killed run was writing (``.inprogress-*``) under any table."""
    found = []
    for table in out.tables():
        pattern = FileSystems.join(table, f"**{INPROGRESS}*")
        try:
            found += [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
        except Exception:  # noqa: BLE001 - a missing table matches nothing
            continue
    return sorted(found)


QUARANTINE = "_quarantine"  # under --output: damaged files, moved aside, never read
REQUIRED = {  # the columns a committed file of each table must have
    "metrics": ("clip_id", "config_hash", "weights_sha256"),
    "saliency": ("clip_id", "config_hash", "weights_sha256", "saliency"),
    "errors": ("clip_id", "stage", "message"),
}


def damage(path: str, table: str) -> str | None:
    """Why a committed file cannot be read, or None when it is sound: its footer, its schema,
    and the pages of the columns a run reads (identity columns; maps are not read here)."""
    try:
        pf = read_parquet(path)
        names = set(pf.schema_arrow.names)
        missing = [c for c in REQUIRED[table] if c not in names]
        if missing:
            return f"columns {', '.join(missing)} are missing"
        pf.read(columns=[c for c in REQUIRED[table] if c != "saliency"])
    except Exception as exc:  # noqa: BLE001 - truncated, garbage, a bad page: all damage
        return one_line(exc, 200)
    return None


def quarantine(out: OutputPaths, run_id: str) -> list[dict]:
    """Move every damaged file of the three tables to ``OUTPUT/_quarantine/<run_id>/``.

    A damaged map file takes its metrics twin along (its identities must be explained again,
    not counted as done), and a damaged metrics file leaves its map file an orphan (removed by
    :func:`recover`); either way this run explains those clips again. Returns one record per
    moved file (``path``, ``moved_to``, ``reason``); each is also logged on one line.
    """
    moved: list[dict] = []
    damaged: dict[str, str] = {}
    for table, root in (("metrics", out.metrics), ("saliency", out.saliency),
                        ("errors", out.errors)):
        for path in table_files(root):
            reason = damage(path, table)
            if reason:
                damaged[path] = reason
                if table == "saliency":
                    twin = FileSystems.join(out.metrics, _relative(out.saliency, path))
                    if FileSystems.exists(twin) and twin not in damaged:
                        damaged[twin] = f"its map file {path} is damaged"
    for path, reason in damaged.items():
        target = FileSystems.join(out.root, QUARANTINE, run_id, path[len(out.root):]
                                  .lstrip("/"))
        _mkdirs(target.rsplit("/", 1)[0])
        FileSystems.rename([path], [target])
        print(f"vidxai: quarantined {path} ({reason}) -> {target}", file=sys.stderr)
        moved.append({"path": path, "moved_to": target, "reason": reason})
    return moved


def remove_temporaries(out: OutputPaths) -> int:
    """Delete the files killed commits were writing (``.inprogress-*``); returns how many."""
    temporaries = leftover_temporaries(out)
    _delete(temporaries)
    return len(temporaries)


def recover(out: OutputPaths) -> dict:
    """Bring ``--output`` back to a committed state after a crash; returns what was removed.

    - temporaries of a killed run (``.inprogress-*``);
    - orphan saliency files: their metrics twin (same relative path) was never committed;
    - duplicate identities (a retried bundle committed the same clips under another file
      name): every later file holding an identity already committed is removed with its
      saliency twin; the clips it held are explained again by this run.
    """
    temporaries = remove_temporaries(out)
    metrics = {_relative(out.metrics, p) for p in table_files(out.metrics)}
    orphans = [p for p in table_files(out.saliency)
               if _relative(out.saliency, p) not in metrics]
    _delete(orphans)
    seen: set[tuple] = set()
    duplicates = []
    for path, table in iter_tables(out.metrics, IDENTITY + ["model", "method"]):
        ids = set(zip(*(table.column(c).to_pylist() for c in IDENTITY + ["model", "method"]),
                      strict=True))
        if ids & seen:
            duplicates.append(path)
        else:
            seen |= ids
    twins = [FileSystems.join(out.saliency, _relative(out.metrics, p)) for p in duplicates]
    _delete(duplicates)
    _delete([p for p in twins if FileSystems.exists(p)])
    return {"temporaries_removed": temporaries, "orphan_files_removed": len(orphans),
            "duplicate_files_removed": len(duplicates)}


def done_methods(out: OutputPaths, model: str, weights_sha256: str,
                 config_hashes: Mapping[str, str]) -> dict[str, frozenset[str]]:
    """clip id → the requested methods whose rows of this configuration are committed."""
    done: dict[str, set[str]] = defaultdict(set)
    for method, config_hash in config_hashes.items():
        for _, table in iter_tables(out.metrics, IDENTITY,
                                    where={"model": model, "method": method}):
            for clip, h, w in zip(*(table.column(c).to_pylist() for c in IDENTITY),
                                  strict=True):
                if h == config_hash and w == weights_sha256:
                    done[clip].add(method)
    return {k: frozenset(v) for k, v in done.items()}


def delete_configuration(out: OutputPaths, model: str, weights_sha256: str,
                         config_hashes: Mapping[str, str]) -> int:
    """``--recompute``: remove the committed files of this configuration (both tables).

    A file holds one run's rows of one method, so it belongs to one configuration or another,
    never both; rows of other configurations and models stay. Not atomic: a crash part-way
    leaves fewer rows, which the next run explains again. Returns the files removed.
    """
    removed = []
    for method, config_hash in config_hashes.items():
        table_dir = partition_dir(out.metrics, model, method)
        for path, table in iter_tables(out.metrics, IDENTITY,
                                       where={"model": model, "method": method}):
            hashes = set(table.column("config_hash").to_pylist())
            weights = set(table.column("weights_sha256").to_pylist())
            if hashes == {config_hash} and weights == {weights_sha256}:
                twin = FileSystems.join(partition_dir(out.saliency, model, method),
                                        _relative(table_dir, path))
                removed.append((path, twin if FileSystems.exists(twin) else None))
    # The commit records first: a crash in between leaves orphan maps (recovered), never a
    # committed identity without its map.
    _delete([m for m, _ in removed])
    _delete([t for _, t in removed if t])
    return sum(1 + (t is not None) for _, t in removed)


def duplicate_identities(out: OutputPaths) -> int:
    """Rows whose identity another committed row has already (0 after every run)."""
    counts: dict[tuple, int] = defaultdict(int)
    for _, table in iter_tables(out.metrics, IDENTITY + ["model", "method"]):
        for key in zip(*(table.column(c).to_pylist() for c in IDENTITY + ["model", "method"]),
                       strict=True):
            counts[key] += 1
    return sum(n - 1 for n in counts.values() if n > 1)
