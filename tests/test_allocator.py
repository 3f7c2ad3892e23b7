"""models.allocator: freed host memory stays in the process, so repeated allocations of one
size stop page-faulting (each case in a fresh interpreter: the setting is process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from models.allocator import retain_freed_memory

_CHILD = """
import json, resource, sys, torch
from models.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # warm-up: the heap settles (its first few 64 MB blocks fault)
    torch.ones(16 << 20).sum()
before = faults()
for _ in range(20):
    torch.ones(16 << 20).sum()  # 64 MB allocated, touched and freed, like an activation
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], check=True, capture_output=True,
                         text=True, cwd=".").stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_reused_without_page_faults():
    default, retained = _faults("default"), _faults("retain")
    assert retained["applied"] is True
    # glibc default: a 64 MB block is above the largest dynamic mmap threshold (32 MB), so each
    # of the 20 allocations maps fresh pages: 20 × 16384 4-KiB pages.
    assert default["faults"] > 20 * 16384 * 0.9, default
    assert retained["faults"] < 0.02 * default["faults"], (default, retained)


def test_it_is_applied_once_and_reports_success():
    first = retain_freed_memory()
    assert retain_freed_memory() is first  # cached: one mallopt per process
    assert first is sys.platform.startswith("linux")
