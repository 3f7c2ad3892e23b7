"""The scoring stage: explain one clip with every requested method, and measure each map.

The per-clip logic is the pure function :func:`explain_clip`: one clean forward (shared by every
method and metric through the perturbation engine), the target, each method's map, then the
metrics of each map. :class:`ExplainFn` is its Beam wrapper: it loads the network once per
worker process through the model handler and ``beam.utils.shared.Shared``, and emits one typed
:class:`~transforms.records.ClipResult` per clip only when every method succeeded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from transforms.methods.base import Method, MethodOptions, score_of
from transforms.metrics import deletion_insertion, pointing_game
from transforms.perturbation import PerturbationEngine
from transforms.records import ClassScore, ClipResult, ClipTubes, MapMetrics, MethodResult
from transforms.scoring import Scorer
from transforms.temporal import above_median_share, mass_in_range, temporal_pointing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainSettings:
    """What the scoring stage needs besides the network (the options table: README.md).

    Attributes:
        methods: method names, in output order.
        target: ``predicted`` | ``label`` | ``fixed`` (with ``fixed_target``).
        method_options: the methods' options; its ``score`` (``prob``, the paper's f, or
            ``logit``; None: each method's own) is what the engine measures for a method that
            reads it. The metrics always measure the probability.
        insertion_blur: > 0: insertion starts from a Gaussian blur (sigma px) of the clip.
        incremental: the engine scores occluded clips by incremental inference (equal maps).
    """

    methods: tuple[str, ...]
    target: str
    fixed_target: int | None
    batch_size: int
    method_options: MethodOptions = field(default_factory=MethodOptions)
    metrics: bool = True
    metric_steps: int = 28
    pointing_radius: float = 7.0
    insertion_blur: float = 0.0
    incremental: bool = False


def choose_target(settings: ExplainSettings, label: int | None, predicted: int,
                  num_classes: int) -> tuple[int, str]:
    """The class to explain and where it came from (``predicted`` / ``label`` / ``fixed``)."""
    if settings.fixed_target is not None:
        if not 0 <= settings.fixed_target < num_classes:
            raise ValueError(f"--target {settings.fixed_target} is out of range for "
                             f"{num_classes} classes")
        return settings.fixed_target, "fixed"
    if settings.target == "label":
        if label is None:
            raise ValueError("--target label but the clip has no label")
        if not 0 <= label < num_classes:
            raise ValueError(f"label {label} is out of range for {num_classes} classes")
        return label, "label"
    return predicted, "predicted"


def explain_clip(scorer: Scorer, item: ClipTubes, methods: list[Method],
                 settings: ExplainSettings) -> ClipResult:
    """Run every method on one clip, then the metrics of each map.

    Args:
        scorer: the network on its device.
        item: the decoded clip (uint8 (T, H, W, 3)) and its tubes.
        methods: method instances, in output order.
        settings: target, score, batch size, metric settings.

    Raises:
        ValueError: the clip does not fit the network, no usable target, a method's map has
            the wrong shape or non-finite values.
    """
    x = scorer.to_input(item.clip.frames)  # (3, T, H, W)
    with torch.inference_mode():
        logits = scorer.logits(x.unsqueeze(0))[0].float()
    probs = torch.softmax(logits, 0).cpu()
    num_classes = probs.shape[0]
    predicted = int(probs.argmax())
    label = item.clip.ref.label
    target, source = choose_target(settings, label, predicted, num_classes)
    engine = PerturbationEngine(scorer, x, target, "prob", settings.batch_size,
                                clean_logits=logits, incremental=settings.incremental)

    def cls(i: int) -> ClassScore:
        return ClassScore(i, scorer.class_name(i), float(probs[i]))

    results = []
    for method in methods:
        engine.use_score(score_of(method, settings.method_options.score) or "prob")
        before, start = engine.passes.copy(), time.perf_counter()
        explanation = method.explain(engine, item.tubes)
        saliency = explanation.saliency
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        sal = _checked_map(saliency, engine.frame_shape, method.name)
        shared = 1 if method.uses_network else 0  # the clean forward every method shares
        forward = engine.passes.forward - before.forward + shared
        backward = engine.passes.backward - before.backward
        metrics = (measure(engine, sal, item.clip.boxes, settings, item.clip.frame_range)
                   if settings.metrics else None)
        results.append(MethodResult(method.name, sal, forward, backward, seconds, metrics,
                                    tuple(explanation.warnings)))
    top = torch.topk(probs, min(5, num_classes)).indices.tolist()
    return ClipResult(
        ref=item.clip.ref, num_frames=int(x.shape[1]), predicted=cls(predicted),
        target=cls(target), target_source=source,
        label=cls(label) if label is not None and 0 <= label < num_classes else None,
        top5=tuple(cls(i) for i in top), methods=tuple(results),
        frame_range=item.clip.frame_range)


def _checked_map(saliency: torch.Tensor, shape: tuple[int, int, int], name: str) -> np.ndarray:
    sal = saliency.detach().cpu().numpy().astype(np.float32)
    if sal.shape != tuple(shape):
        raise ValueError(f"method {name} returned a map of shape {sal.shape}, expected {shape}")
    if not np.isfinite(sal).all():
        raise ValueError(f"method {name} returned a map with non-finite values")
    return sal


def measure(engine: PerturbationEngine, saliency: np.ndarray, boxes,
            settings: ExplainSettings, frame_range: tuple[int, int] | None = None
            ) -> MapMetrics:
    """Deletion / insertion AUC (through the engine, probability of the target; the clean
    clip's score is shared), the spatial pointing game (with boxes) and the temporal one (with
    a frame range in clip frames)."""
    start, before = time.perf_counter(), engine.passes.forward
    start_image = (engine.fill("blur", sigma=settings.insertion_blur)
                   if settings.insertion_blur > 0 else None)
    di = deletion_insertion(engine.x, torch.from_numpy(saliency).to(engine.device),
                            lambda batch: engine.score(batch, "prob"),
                            steps=settings.metric_steps, batch_size=settings.batch_size,
                            insertion_baseline=start_image,
                            clean_score=engine.clean_score("prob"))
    hits = frames = rate = None
    if boxes is not None:
        pg = pointing_game(saliency, boxes, settings.pointing_radius)
        hits, frames, rate = pg.hits, pg.frames, (None if pg.frames == 0 else pg.rate)
    tpt = t_mass = t_share = None
    if frame_range is not None:
        tpt = temporal_pointing(saliency, frame_range)
        t_mass = _finite_or_none(mass_in_range(saliency, frame_range))
        t_share = _finite_or_none(above_median_share(saliency, frame_range))
    return MapMetrics(
        tpt_hit=tpt, t_mass_in_range=t_mass, t_above_median_share=t_share,
        deletion_auc=di["deletion_auc"], insertion_auc=di["insertion_auc"],
        deletion_curve=tuple(float(v) for v in di["deletion_curve"]),
        insertion_curve=tuple(float(v) for v in di["insertion_curve"]),
        forward_passes=engine.passes.forward - before,
        seconds=time.perf_counter() - start, spt_hits=hits, spt_frames=frames, spt_rate=rate)


def _finite_or_none(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


# --- Beam wrapper ---

import apache_beam as beam  # noqa: E402
from apache_beam.utils import shared  # noqa: E402

from transforms.deadletter import DeadLetterFn  # noqa: E402
from transforms.methods.base import get_method  # noqa: E402
from transforms.model_handler import VideoModelHandler  # noqa: E402


class DeviceOutOfMemory(ValueError):
    """The clip does not fit the device even at half the batch size (a data error: other,
    smaller clips still run)."""


def explain_with_oom_retry(scorer: Scorer, item: ClipTubes, methods: list[Method],
                           settings: ExplainSettings) -> ClipResult:
    """:func:`explain_clip`; on a device out-of-memory error once more at half the batch
    size (maps do not depend on it), then :class:`DeviceOutOfMemory` naming both sizes."""
    try:
        return explain_clip(scorer, item, methods, settings)
    except torch.OutOfMemoryError as first:
        _release_device_memory()
        half = max(1, settings.batch_size // 2)
        try:
            return explain_clip(scorer, item, methods, replace(settings, batch_size=half))
        except torch.OutOfMemoryError as second:
            _release_device_memory()
            raise DeviceOutOfMemory(
                f"device out of memory at --batch-size {settings.batch_size} and again at "
                f"{half}: {' '.join(str(second or first).split())[:200]}") from second


def _release_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Holder:
    """``Shared`` keeps weak references: the network lives in a weak-referenceable object."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer


class ExplainFn(DeadLetterFn):
    """ClipTubes → ClipResult (main) or an ErrorRecord (tag ``errors``).

    The network is built by ``handler.load_model()`` once per worker process and shared by
    every instance and thread of this step (``beam.utils.shared.Shared``, keyed by the
    handler's settings).
    """

    stage = "explain"

    def __init__(self, handler: VideoModelHandler, settings: ExplainSettings,
                 shared_handle: shared.Shared | None = None):
        self.handler, self.settings = handler, settings
        self._shared = shared_handle or shared.Shared()
        self.scorer: Scorer | None = None

    def setup(self):
        handler = self.handler
        # Keep the holder referenced: Shared drops objects nobody holds.
        self._holder = self._shared.acquire(lambda: _Holder(handler.load_model()),
                                            tag=handler.share_tag())
        self.scorer = self._holder.scorer
        self.methods = [get_method(m, self.settings.method_options)
                        for m in self.settings.methods]

    def apply(self, item: ClipTubes):
        wanted = item.clip.ref.methods  # None: all; else the ones --output still lacks
        methods = (self.methods if wanted is None
                   else [m for m in self.methods if m.name in wanted])
        result = explain_with_oom_retry(self.scorer, item, methods, self.settings)
        counter = beam.metrics.Metrics.counter
        counter("vidxai", "forward_passes").inc(sum(
            m.forward_passes + (m.metrics.forward_passes if m.metrics else 0)
            for m in result.methods))
        counter("vidxai", "backward_passes").inc(sum(m.backward_passes
                                                     for m in result.methods))
        for m in result.methods:
            for warning in m.warnings:
                log.warning("%s (start frame %d): %s: %s", item.clip.ref.video,
                            item.clip.ref.start_frame, m.method, warning)
                counter("vidxai", "method_warnings").inc()
        yield result
