"""Explain one clip with every requested method, and measure each map (scoring stage).

The per-clip logic is the pure function :func:`explain_clip`; :class:`ExplainFn` is its Beam
wrapper, which loads the network once per worker process (``beam.utils.shared.Shared``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from models.registry import class_name
from pipeline.records import ClipTubes
from transforms.methods.base import Method
from transforms.metrics import blurred_baseline, deletion_insertion, pointing_game
from transforms.scoring import Scorer


@dataclass(frozen=True)
class ExplainSettings:
    """What the scoring stage needs besides the model."""

    methods: tuple[str, ...]
    target: str  # predicted | label | fixed
    fixed_target: int | None
    batch_size: int
    aggregation: str = "mean"
    metrics: bool = True
    metric_steps: int = 28
    pointing_radius: float = 7.0
    insertion_blur: float = 0.0  # > 0: insertion starts from a Gaussian blur (sigma px) of x


@dataclass
class MethodResult:
    """One method's map (float32 (T, H, W)) and measurements."""

    method: str
    saliency: np.ndarray
    forward_passes: int
    backward_passes: int
    seconds: float
    metrics: dict = field(default_factory=dict)


@dataclass
class ClipResult:
    """Everything the scoring stage learned about one clip."""

    predicted: int
    predicted_prob: float
    target: int
    target_prob: float
    target_source: str
    label_prob: float | None
    top5: list[tuple[int, float]]
    methods: list[MethodResult]


def choose_target(settings: ExplainSettings, label: int | None, predicted: int,
                  num_classes: int) -> tuple[int, str]:
    """The class to explain and where it came from (``predicted`` / ``label`` / ``fixed``)."""
    if settings.fixed_target is not None:
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
        settings: targets, batch size, metric settings.
    """
    x = scorer.to_input(item.clip.frames)  # (3, T, H, W)
    with torch.inference_mode():
        probs = scorer.probs(x.unsqueeze(0))[0].cpu()
    predicted = int(probs.argmax())
    label = item.clip.ref.label
    target, source = choose_target(settings, label, predicted, probs.shape[0])
    top = torch.topk(probs, min(5, probs.shape[0]))
    result = ClipResult(
        predicted, float(probs[predicted]), target, float(probs[target]), source,
        float(probs[label]) if label is not None and 0 <= label < probs.shape[0] else None,
        [(int(i), float(p)) for p, i in zip(top.values, top.indices, strict=True)], [])
    for method in methods:
        start = time.perf_counter()
        exp = method.explain(scorer, x, target, item.tubes, settings.batch_size)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        res = MethodResult(method.name, exp.saliency.numpy().astype(np.float32),
                           exp.forward_passes, exp.backward_passes,
                           time.perf_counter() - start)
        if settings.metrics:
            res.metrics = measure(scorer, x, res.saliency, target, item.clip.boxes, settings)
        result.methods.append(res)
    return result


def measure(scorer: Scorer, x: torch.Tensor, saliency: np.ndarray, target: int,
            boxes, settings: ExplainSettings) -> dict:
    """Deletion / insertion AUC (batched forwards through ``scorer``) and the pointing game."""
    start = time.perf_counter()
    start_image = (blurred_baseline(x, settings.insertion_blur) if settings.insertion_blur > 0
                   else None)
    di = deletion_insertion(x, torch.from_numpy(saliency).to(x.device),
                            lambda batch: scorer.target_scores(batch, target),
                            steps=settings.metric_steps, batch_size=settings.batch_size,
                            insertion_baseline=start_image)
    out = {
        "deletion_auc": di["deletion_auc"], "insertion_auc": di["insertion_auc"],
        "deletion_curve": [float(v) for v in di["deletion_curve"]],
        "insertion_curve": [float(v) for v in di["insertion_curve"]],
        "metric_forward_passes": di["forward_passes"],
        "spt_hits": None, "spt_frames": None, "spt_rate": None,
    }
    if boxes is not None:
        pg = pointing_game(saliency, boxes, settings.pointing_radius)
        out.update(spt_hits=pg.hits, spt_frames=pg.frames,
                   spt_rate=None if pg.frames == 0 else pg.rate)
    out["metric_seconds"] = time.perf_counter() - start
    return out


# --- Beam wrapper ---

import apache_beam as beam  # noqa: E402
from apache_beam.utils import shared  # noqa: E402

from pipeline.schema import metrics_row, saliency_row  # noqa: E402
from transforms.deadletter import DeadLetterFn  # noqa: E402
from transforms.methods.base import get_method  # noqa: E402
from transforms.scoring import load_scorer  # noqa: E402

METRICS = "metrics"


class ExplainFn(DeadLetterFn):
    """ClipTubes → saliency rows (main), metric rows (tag ``metrics``), dead letters."""

    stage = "explain"

    def __init__(self, model_args: dict, settings: ExplainSettings, run_info: dict,
                 shared_handle: shared.Shared | None = None):
        self.model_args, self.settings, self.run_info = model_args, settings, run_info
        self._shared = shared_handle or shared.Shared()
        self.scorer: Scorer | None = None

    def setup(self):
        args = self.model_args

        class _Holder:  # Shared needs a weak-referenceable object
            def __init__(self):
                self.scorer = load_scorer(**args)

        self.scorer = self._shared.acquire(_Holder, tag=repr(sorted(args.items()))).scorer
        self.methods = [get_method(m, self.settings.aggregation)
                        for m in self.settings.methods]
        self.names = (self.scorer.spec.class_names() if self.scorer.spec.class_names
                      else None)

    def apply(self, item: ClipTubes):
        result = explain_clip(self.scorer, item, self.methods, self.settings)
        beam.metrics.Metrics.counter("vidxai", "clips_written").inc()
        ref = item.clip.ref
        for res in result.methods:
            yield saliency_row(ref, item.clip.frames.shape, result, res, self.run_info,
                               lambda i: class_name(self.scorer.spec, i, self.names))
            if self.settings.metrics:
                yield beam.pvalue.TaggedOutput(
                    METRICS, metrics_row(ref, result, res, self.run_info,
                                         lambda i: class_name(self.scorer.spec, i, self.names)))
