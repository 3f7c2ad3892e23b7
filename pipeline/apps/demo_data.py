"""The three videos the composites (:mod:`pipeline.apps.compose`) are built from.

A view on :mod:`pipeline.apps.footage`, the catalogue of real videos from the package
registries: ``vtest`` and ``tree`` from Debian ``opencv-doc``, ``walking`` from PyPI
``stream-pose-ml``. Files land in ``<cache>/demo_videos``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.apps.footage import FootageUnavailable, fetch

DemoDataUnavailable = FootageUnavailable
NAMES = ("vtest", "tree", "walking")


def fetch_demo_videos(cache: Path) -> dict[str, Path]:
    """vtest, tree and walking, fetched once into ``cache/demo_videos`` and checksummed."""
    return {name: fetch(name, cache / "demo_videos") for name in NAMES}
