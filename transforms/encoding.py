"""How a saliency map is stored: optional pooling in time / space, then float32, float16 or uint8.

Pure numpy. The sink encodes with :func:`encode_map`; readers decode with :func:`decode_map`.
``uint8`` stores ``round(255 · (v − lo) / (hi − lo))`` with ``lo, hi`` the map's minimum and
maximum (the ``map_min`` / ``map_max`` columns), so the round-trip error is at most
``(hi − lo) / 510``; a constant map stores zeros and decodes to ``lo`` exactly. Pooling is a
mean over ``pool_t × pool_s × pool_s`` blocks (the map's shape must divide).
"""

from __future__ import annotations

import numpy as np

ENCODINGS = ("float32", "float16", "uint8")


def check_pool(shape: tuple[int, int, int], pool: tuple[int, int]) -> None:
    """ValueError unless ``pool = (pool_t, pool_s)`` divides a (T, H, W) map."""
    pt, ps = pool
    t, h, w = shape
    if pt < 1 or ps < 1:
        raise ValueError(f"--saliency-pool must be >= 1 in time and space, got {pt},{ps}")
    if t % pt or h % ps or w % ps:
        raise ValueError(f"--saliency-pool {pt},{ps} does not divide the maps' shape "
                         f"{t}×{h}×{w} (T must be a multiple of {pt}, H and W of {ps})")


def pool_map(saliency: np.ndarray, pool: tuple[int, int]) -> np.ndarray:
    """Mean-pool a (T, H, W) map by ``(pool_t, pool_s)`` → (T/pt, H/ps, W/ps) float32."""
    pt, ps = pool
    check_pool(saliency.shape, pool)
    t, h, w = saliency.shape
    blocks = saliency.astype(np.float32).reshape(t // pt, pt, h // ps, ps, w // ps, ps)
    return blocks.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def encode_map(saliency: np.ndarray, encoding: str, lo: float, hi: float) -> np.ndarray:
    """The stored array of a (pooled) map.

    Args:
        saliency: float (T', H', W').
        encoding: ``float32`` | ``float16`` | ``uint8``.
        lo, hi: the range uint8 quantises into (the full-resolution map's min and max, which
            bound the pooled values).
    """
    if encoding == "float32":
        return saliency.astype(np.float32)
    if encoding == "float16":
        return saliency.astype(np.float16)
    if encoding == "uint8":
        if not hi > lo:
            return np.zeros(saliency.shape, np.uint8)
        q = np.rint((saliency.astype(np.float64) - lo) * (255.0 / (hi - lo)))
        return np.clip(q, 0, 255).astype(np.uint8)
    raise ValueError(f"--saliency-dtype must be one of {', '.join(ENCODINGS)}, got {encoding!r}")


def decode_map(stored: np.ndarray, encoding: str, lo: float, hi: float,
               pool: tuple[int, int] = (1, 1), upsample: bool = False) -> np.ndarray:
    """A stored map back as float32 (T', H', W'), or (T, H, W) with ``upsample`` (each pooled
    value repeated over its block)."""
    if encoding == "uint8":
        scale = (hi - lo) / 255.0 if hi > lo else 0.0
        out = (lo + stored.astype(np.float64) * scale).astype(np.float32)
    elif encoding in ("float16", "float32"):
        out = stored.astype(np.float32)
    else:
        raise ValueError(f"unknown saliency encoding {encoding!r}")
    if upsample and tuple(pool) != (1, 1):
        pt, ps = pool
        out = out.repeat(pt, axis=0).repeat(ps, axis=1).repeat(ps, axis=2)
    return out


def stored_dtype(encoding: str) -> np.dtype:
    if encoding not in ENCODINGS:
        raise ValueError(f"--saliency-dtype must be one of {', '.join(ENCODINGS)}, "
                         f"got {encoding!r}")
    return np.dtype(encoding)
