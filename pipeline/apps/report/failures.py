"""Failed clips in their latest state: a clip that failed in one run and was written by a later
one is not a failure; a clip that failed several times is listed once, with its latest error.

A clip's state is kept per (clip_id, model, weights_sha256): the same clip may be written by one
network and fail with another. Runs are ordered by their id (``20261124T151640Z-3fa9c1`` sorts
by start time; rows of runs before ids existed sort first). Within one run a clip either wrote
its rows or failed (dead letters are all-or-nothing per clip), so a tie cannot happen; were it
to, the written rows win.
"""

from __future__ import annotations

from collections.abc import Iterable

ClipKey = tuple[str, str, str]  # (clip_id, model, weights_sha256)

# The failure table's columns: (row key, header).
COLUMNS = (("clip_id", "clip"), ("video", "video"), ("start_frame", "start frame"),
           ("stage", "stage"), ("error_type", "error type"), ("message", "reason"),
           ("run_id", "run id"))


def clip_key(row: dict) -> ClipKey:
    return (row["clip_id"], row.get("model") or "", row.get("weights_sha256") or "")


def latest_written(rows: Iterable[dict]) -> dict[ClipKey, str]:
    """The latest run id that wrote each clip (``rows``: metrics rows with ``clip_id``,
    ``model``, ``weights_sha256``, ``run_id``)."""
    out: dict[ClipKey, str] = {}
    for r in rows:
        key, run = clip_key(r), r.get("run_id") or ""
        if key not in out or run > out[key]:
            out[key] = run
    return out


def latest_failures(errors: Iterable[dict], written: dict[ClipKey, str]) -> list[dict]:
    """The error rows of clips whose latest state is failed: per clip key the latest error,
    kept when no run at or after it wrote the clip; sorted by stage, error type and clip."""
    latest: dict[ClipKey, dict] = {}
    for e in errors:
        key = clip_key(e)
        if key not in latest or (e.get("run_id") or "") > (latest[key].get("run_id") or ""):
            latest[key] = e
    failed = [e for key, e in latest.items()
              if key not in written or written[key] < (e.get("run_id") or "")]
    return sorted(failed, key=lambda e: (e.get("stage") or "", e.get("error_type") or "",
                                         e["clip_id"], e.get("model") or ""))
