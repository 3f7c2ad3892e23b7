"""What a compact map encoding costs: bytes per map and the error it introduces, on real maps.

    python benchmarks/encoding_error.py --output OUT [--rows 400]

Reads the float16/float32 maps of a finished run (any layout), stores each again with every
``--saliency-dtype`` / ``--saliency-pool`` option, decodes it back to full resolution
(``upsample``) and compares it with the map as written:

- max |error| / range: the largest voxel error relative to the map's range;
- mean |error| / range;
- Spearman: rank correlation of the voxels (what deletion/insertion orderings see);
- peak moved: share of frames whose maximum moved by more than ``radius`` px (what the
  pointing game sees; default radius 7 px at 112 px, scaled).

The metric columns of a run never change with the encoding: they are computed before storage.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.apps.report.stats import spearman  # noqa: E402
from pipeline.outputs import iter_tables  # noqa: E402
from transforms.encoding import decode_map, encode_map, pool_map  # noqa: E402

OPTIONS = [("float16", (1, 1)), ("uint8", (1, 1)), ("float16", (1, 2)), ("uint8", (2, 4)),
           ("uint8", (2, 8))]


def peak_moved(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    moved = 0
    for fa, fb in zip(a, b, strict=True):
        ya, xa = np.unravel_index(int(fa.argmax()), fa.shape)
        yb, xb = np.unravel_index(int(fb.argmax()), fb.shape)
        moved += (ya - yb) ** 2 + (xa - xb) ** 2 > radius ** 2
    return moved / len(a)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", required=True, help="a finished run's --output")
    ap.add_argument("--rows", type=int, default=400, help="maps to measure (evenly spread)")
    a = ap.parse_args(argv)
    maps = []
    for _, table in iter_tables(str(Path(a.output) / "saliency"),
                                ["saliency", "encoding", "map_min", "map_max", "method"]):
        enc = (table.column("encoding").to_pylist() if "encoding" in table.column_names
               else ["float16"] * table.num_rows)
        arr = table.column("saliency").combine_chunks().to_numpy_ndarray()
        for m, e, lo, hi in zip(arr, enc, table.column("map_min").to_pylist(),
                                table.column("map_max").to_pylist(), strict=True):
            if e in ("float16", "float32"):
                maps.append(decode_map(m, e, lo, hi))
    if not maps:
        raise SystemExit(f"{a.output} has no float maps")
    pick = np.linspace(0, len(maps) - 1, min(a.rows, len(maps))).round().astype(int)
    maps = [maps[i] for i in pick]
    t, h, w = maps[0].shape
    radius = 7 * h / 112
    print(f"vidxai encoding error, {time.strftime('%Y-%m-%d', time.gmtime())}: {len(maps)} "
          f"maps of {t}×{h}×{w} from {a.output} (the stored float maps are the reference)\n")
    print(f"{'--saliency-dtype':<17} {'--saliency-pool':<16} {'bytes/map':>10} "
          f"{'max|err|/range':>15} {'mean|err|/range':>16} {'Spearman':>9} {'peak moved':>11}")
    for enc, pool in OPTIONS:
        errs, means, rhos, moved = [], [], [], []
        size = 0
        for m in maps:
            lo, hi = float(m.min()), float(m.max())
            if not hi > lo:
                continue
            pooled = pool_map(m, pool) if pool != (1, 1) else m
            stored = encode_map(pooled, enc, lo, hi)
            size = stored.nbytes
            back = decode_map(stored, enc, lo, hi, pool, upsample=True)
            diff = np.abs(back - m) / (hi - lo)
            errs.append(diff.max())
            means.append(diff.mean())
            rhos.append(spearman(m, back))
            moved.append(peak_moved(m, back, radius))
        print(f"{enc:<17} {','.join(map(str, pool)):<16} {size:>10,} {np.max(errs):>15.4f} "
              f"{np.mean(means):>16.5f} {np.median(rhos):>9.4f} {np.mean(moved):>11.3f}")
    print("\n(Spearman: median over maps; peak moved: mean share of frames whose maximum moved "
          f"by more than {radius:.0f} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
