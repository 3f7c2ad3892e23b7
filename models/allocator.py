"""Keep freed host memory inside the process, so repeated forwards stop page-faulting.

An occlusion method runs hundreds of forwards of one shape. Each forward allocates and frees
the same activations (up to hundreds of MB on the CPU). glibc's malloc serves blocks above its
mmap threshold with fresh ``mmap`` pages and gives freed memory at the top of its heap back to
the kernel once more than the trim threshold is free; both thresholds adapt to the program, so
whether a forward re-faults its activations' pages depends on what else was allocated in
between. Measured on r3d_18 (8 × 56 × 56, batches of 8, 197 forwards): 0.5–1.4 million minor
page faults per explanation and 1–3.5 s of kernel time in 9–11 s, varying with the caller's
own allocations; with both thresholds fixed high, no faults and no kernel time
(docs/BENCHMARKS.md, ``dense_masks``).

:func:`retain_freed_memory` fixes both thresholds with ``mallopt`` (glibc only; elsewhere it
does nothing and says so). The cost: up to ``limit`` bytes of freed memory stay mapped in the
process (its resident size stays at its peak instead of shrinking between clips), which is what
PyTorch's own CUDA caching allocator does for device memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
"""glibc ``mallopt`` parameter: free bytes at the heap top kept before returning them."""
M_MMAP_THRESHOLD = -3
"""glibc ``mallopt`` parameter: blocks at least this large are served by their own ``mmap``."""
RETAIN_BYTES = 1 << 30
"""Both thresholds (1 GiB): larger than any activation batch vidxai allocates."""


@functools.cache
def retain_freed_memory(limit: int = RETAIN_BYTES) -> bool:
    """Set glibc's trim and mmap thresholds to ``limit`` bytes for this process (once).

    Returns:
        True when glibc accepted both settings; False where the C library is not glibc (the
        allocator then behaves as before).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    value = min(limit, 2**31 - 1)
    return bool(mallopt(M_TRIM_THRESHOLD, value)) and bool(mallopt(M_MMAP_THRESHOLD, value))
