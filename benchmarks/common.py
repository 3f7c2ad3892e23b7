"""What every benchmark shares: options, the header, synthetic clips, timing and peak memory.

Times are medians of interleaved repeats in one process, so that machine noise hits the
variants alike, and every figure printed is a ratio of two such times. Peak memory is measured
in a fresh ``spawn`` child per variant: on the CPU the growth of the peak resident set (VmHWM,
reset through ``/proc/self/clear_refs`` after the set-up) over the resident set after the
network was loaded and warmed up; on CUDA ``torch.cuda.max_memory_allocated`` over the memory
allocated before the run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import logging
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch

from transforms.model_handler import ModelConfig, VideoModelHandler
from transforms.scoring import Scorer, resolve_device

SETTINGS = ("device", "model", "size", "frames", "batch_size", "precision", "threads",
            "repeats")
"""The options a child process needs to rebuild the same scorer and clip."""


def parser(description: str, frames: int = 8, size: int = 56, repeats: int = 1,
           model: str = "r3d_18") -> argparse.ArgumentParser:
    """The options every benchmark takes (the defaults keep each one under ~5 min on 2 cores).

    Args:
        description: the module's first docstring line.
        frames, size, repeats, model: this benchmark's defaults.
    """
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    ap.add_argument("--model", default=model, help=f"registered network (default: {model})")
    ap.add_argument("--size", type=int, default=size, help=f"frame side in px (default: {size})")
    ap.add_argument("--frames", type=int, default=frames,
                    help=f"frames per clip (default: {frames})")
    ap.add_argument("--repeats", type=int, default=repeats,
                    help=f"interleaved timed repeats, median reported (default: {repeats})")
    ap.add_argument("--batch-size", type=int, default=8, help="clips per forward (default: 8)")
    ap.add_argument("--precision", default="fp32",
                    help="fp32 | bf16 | fp16 | auto (default: fp32)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    return ap


def load_scorer(args: argparse.Namespace) -> Scorer:
    """The network of ``args`` on its device (seeded random weights unless it has its own)."""
    logging.getLogger("transforms.model_handler").setLevel(logging.ERROR)  # random: expected
    handler = VideoModelHandler(ModelConfig(args.model), args.device, args.precision,
                                args.threads)
    return handler.load_model()


def cpu_name() -> str:
    """``lscpu``'s model name."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    names = [ln.split(":", 1)[1].strip() for ln in out.splitlines()
             if ln.startswith("Model name:")]
    return names[0] if names else "unknown CPU"


def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def header(title: str, args: argparse.Namespace, **settings: object) -> str:
    """Date, machine, load, library versions and the settings, printed above every result."""
    device = resolve_device(args.device)
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        machine = (f"{cpu_name()}, {os.cpu_count()} cores, torch threads "
                   f"{args.threads or torch.get_num_threads()}, native bf16 "
                   f"{'yes' if cpu_has_bf16() else 'no'}")
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    shown = {"model": args.model, "clip": f"{args.frames} x {args.size} x {args.size}",
             "batch": args.batch_size, "precision": args.precision, "repeats": args.repeats,
             **settings}
    return "\n".join([
        f"== {title}",
        f"date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine}; "
        f"load average {load}",
        f"torch {torch.__version__}, python {platform.python_version()}, device {device}",
        "settings: " + ", ".join(f"{k} {v}" for k, v in shown.items()),
    ])


def synthetic_clip(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """A textured, panning clip with a red square moving across it: uint8 (T, size, size, 3)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    side = max(2, size // 6)
    clip = np.stack([np.roll(base, (2 * t) % size, axis=1) for t in range(frames)])
    for t in range(frames):
        x = (size // 10 + max(1, size // 28) * t) % (size - side)
        clip[t, size // 3:size // 3 + side, x:x + side] = (255, 40, 40)
    return clip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(variants: dict[str, Callable[[], object]], repeats: int,
                device: torch.device, warmup: bool = True) -> dict[str, float]:
    """Median wall time of each variant, the variants run in turn ``repeats`` times.

    Args:
        variants: name → a call that does the work once.
        repeats: rounds (each runs every variant once, in order).
        device: synchronised around each call (CUDA).
        warmup: run each variant once, untimed, first.

    Returns:
        name → median seconds.
    """
    if warmup:
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


class NetworkClock:
    """Wall seconds spent inside ``scorer.logits`` (the network), per variant call."""

    def __init__(self, scorer: Scorer) -> None:
        self.inside, self._logits = 0.0, scorer.logits

        def timed(x: torch.Tensor) -> torch.Tensor:
            sync(scorer.device)
            t0 = time.perf_counter()
            out = self._logits(x)
            sync(scorer.device)
            self.inside += time.perf_counter() - t0
            return out

        scorer.logits = timed  # type: ignore[method-assign]

    def measure(self, fn, log: list[float]):
        """A call of ``fn`` that appends its network seconds to ``log``."""
        def call() -> None:
            before = self.inside
            fn()
            log.append(self.inside - before)
        return call


SAME_FORWARDS_BAND = 1.03
"""Two variants that run the same forwards tie when their time ratio is at most this: the
totals differ only by each variant's own work outside the network (tens of ms in ~8.5 s),
and repeated runs of the very same forwards spread by more (``dense_masks``, 2026-11-30,
nine runs: 0.975–1.024, mean 1.004; docs/BENCHMARKS.md)."""


def same_forwards_lines(times: dict[str, float], network: dict[str, float], a: str, b: str,
                        forwards: int) -> str:
    """The time lines of two variants that run the same ``forwards``: the totals (target
    <= 1, a tie up to :data:`SAME_FORWARDS_BAND`) and their split inside / outside the
    network (:class:`NetworkClock`)."""
    own = {k: times[k] - network[k] for k in (a, b)}
    return (f"time      {a} {times[a]:.2f} s, {b} {times[b]:.2f} s ({forwards} forwards each): "
            f"{a} / {b} = {fmt_ratio(times[a], times[b])} (target <= 1; the same forwards, so "
            f"it is judged a tie up to {SAME_FORWARDS_BAND:g}, their run-to-run spread)\n"
            f"          of which in the network: {a} {network[a]:.2f} s, {b} {network[b]:.2f} "
            f"s; outside it: {a} {own[a]:.3f} s, {b} {own[b]:.3f} s: {a} / {b} = "
            f"{fmt_ratio(own[a], own[b])} (what the totals differ by)")


# --- Peak memory in a fresh process ---------------------------------------------------------


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def peak_growth_mb(fn: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Run ``fn`` once: the growth of peak memory over the memory in use before, and its time.

    CPU: VmHWM after resetting it to the current RSS, minus that RSS (without the reset,
    ``ru_maxrss``: then the set-up's own peak may hide a smaller one). CUDA:
    ``max_memory_allocated`` minus ``memory_allocated`` before.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        return {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 - before,
                "before_mb": before, "seconds": time.perf_counter() - t0}
    before = _status_mb("VmRSS")
    reset = _reset_peak_rss()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = (_status_mb("VmHWM") if reset
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"peak_mb": peak - before, "before_mb": before, "seconds": seconds}


def _call(target: str, kwargs: dict) -> dict:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def in_child(target: str, **kwargs: object) -> dict:
    """``module:function(**kwargs)`` in a fresh spawned process; its returned dict.

    The function does its own set-up (network, clip, warm-up) and returns
    :func:`peak_growth_mb` of the measured call, so none of this process's memory counts.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_call, target, kwargs).result()


def settings_of(args: argparse.Namespace) -> dict:
    """The picklable settings a child needs (:data:`SETTINGS`)."""
    return {k: getattr(args, k) for k in SETTINGS}


def child_setup(settings: dict, retain: bool = False
                ) -> tuple[argparse.Namespace, Scorer, torch.Tensor]:
    """In a child: threads, the scorer, the normalised clip (3, T, H, W) on the device, and one
    clean forward (the network's one-time initialisation is part of loading it, not of a
    method).

    ``retain`` False (the memory measurements) keeps glibc's default allocator instead of the
    one every Scorer sets (:mod:`models.allocator`): freed memory then goes back to the kernel,
    so the resident peak is what a method has in use, not what an earlier forward left
    mapped."""
    if not retain:
        import transforms.scoring  # noqa: PLC0415  (this child only)
        transforms.scoring.retain_freed_memory = lambda: False  # type: ignore[assignment]
    args = argparse.Namespace(**settings)
    if args.threads:
        torch.set_num_threads(args.threads)
    scorer = load_scorer(args)
    x = scorer.to_input(synthetic_clip(args.frames, args.size))
    with torch.inference_mode():
        scorer.logits(x[None])
    return args, scorer, x


def check_equal(ours: np.ndarray, ref: np.ndarray, names: tuple[str, str]) -> float:
    """Print whether two maps are equal (``np.allclose``, rtol 1e-4, atol 1e-4 · max |ref|) and
    stop the benchmark when they are not: no ratio is printed for different maps.

    Returns:
        max |ours − ref|.
    """
    diff, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    equal = bool(np.allclose(ours, ref, rtol=1e-4, atol=1e-4 * scale + 1e-8))
    print(f"maps equal: {'yes' if equal else 'NO'} (max |{names[0]} - {names[1]}| {diff:.2e}, "
          f"max |map| {scale:.2e})", flush=True)
    if not equal:
        raise SystemExit(f"{names[0]} and {names[1]} disagree: no ratio is printed")
    return diff


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "inf"
