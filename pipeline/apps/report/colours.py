"""One colour per method across every figure of the report: a fixed mapping from the method's
name (the paper families in related hues), and for a method it does not know (a user's) a
colour chosen from the rest by a hash of the name, so it never changes between reports."""

from __future__ import annotations

import hashlib

# matplotlib's "tab20" colours, written out so that the mapping does not depend on a library.
KNOWN = {
    "aosa": "#1f77b4", "aosa_sgl": "#aec7e8", "aosa_t": "#17becf", "aosa_t_sgl": "#9edae5",
    "aosa_approx": "#9467bd", "aosa_sgl_approx": "#c5b0d5", "osa": "#ff7f0e",
    "ep": "#2ca02c", "step": "#98df8a", "fep": "#bcbd22", "gradcam": "#d62728",
    "gradcam_frame": "#ff9896", "random": "#7f7f7f", "center": "#8c564b",
}
OTHERS = ("#e377c2", "#f7b6d2", "#c49c94", "#dbdb8d", "#ffbb78", "#c7c7c7")


def method_name(label: str) -> str:
    """The method of a table label (``"aosa c:3fa9c1"`` → ``"aosa"``)."""
    return label.split(" ", 1)[0]


def method_colour(method: str) -> str:
    """``#rrggbb`` of a method (name or table label)."""
    name = method_name(method)
    if name in KNOWN:
        return KNOWN[name]
    return OTHERS[int(hashlib.sha1(name.encode()).hexdigest(), 16) % len(OTHERS)]


def method_rgb(method: str) -> tuple[int, int, int]:
    """(r, g, b) 0–255 of :func:`method_colour`."""
    h = method_colour(method)
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)
