"""The one place that decides whether a failing clip becomes a dead letter or fails the run.

Only **data errors** become dead letters: the clip itself is unusable (a missing, empty,
corrupt or too short video, an annotation that does not fit it, a label that is no class), and
every other clip can still be explained. Those are :class:`ValueError` (``ClipError`` and the
annotation checks are ValueErrors) and OpenCV's ``cv2.error`` on undecodable frames. Anything
else — a bug, a device error, a network that vanished — is **not** the clip's fault: it fails
the bundle with a :class:`StageFailed` that names the clip, so that the runner retries the
bundle and, if it fails again, the run fails loudly instead of dead-lettering the dataset.
"""

from __future__ import annotations

import logging
import time

import apache_beam as beam
import cv2

from transforms.records import ErrorRecord, clip_ref

ERRORS = "errors"
DATA_ERRORS: tuple[type[BaseException], ...] = (ValueError, cv2.error)
log = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """An unexpected error while processing one clip; the message names the clip and stage.

    The job finds this line in the runner's error (``STAGE_FAILED_MARK``) and reports it as the
    run's one-line reason.
    """


STAGE_FAILED_MARK = "vidxai-stage-failed: "


def is_data_error(exc: BaseException) -> bool:
    return isinstance(exc, DATA_ERRORS)


class DeadLetterFn(beam.DoFn):
    """Applies :meth:`apply` to each clip; a data error → ErrorRecord on tag ``errors``, any
    other exception → :class:`StageFailed` (the bundle fails, naming the clip).

    All-or-nothing: the outputs of one element are collected first and emitted only when
    :meth:`apply` finished, so a clip that fails half-way leaves an error row and nothing else.
    Subclasses set ``stage`` and implement ``apply(element) -> iterable of outputs``. Each
    stage counts its clips (``<stage>_ok``) and milliseconds (``<stage>_ms``) in Beam counters.
    """

    stage = "stage"

    def apply(self, element):  # pragma: no cover - abstract
        raise NotImplementedError

    def process(self, element):
        start = time.perf_counter()
        try:
            outputs = list(self.apply(element))
        except Exception as exc:  # noqa: BLE001 - sorted into data errors and the rest
            ref = clip_ref(element)
            if not is_data_error(exc):
                raise StageFailed(
                    f"{STAGE_FAILED_MARK}clip {ref.clip_id} ({ref.video}"
                    f"{'' if not ref.start_frame else f' from frame {ref.start_frame}'}) "
                    f"failed in {self.stage}: {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:500]}") from exc
            log.warning("clip %s (%s) failed in %s: %s: %s", ref.clip_id, ref.video,
                        self.stage, type(exc).__name__, exc)
            beam.metrics.Metrics.counter("vidxai", "clips_failed").inc()
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord.of(
                ref.clip_id, ref.video, self.stage, exc, ref.start_frame))
            return
        finally:
            _count(f"{self.stage}_ms", int(round(1000 * (time.perf_counter() - start))))
        _count(f"{self.stage}_ok")
        yield from outputs


def _count(name: str, n: int = 1) -> None:
    """Add ``n`` to the Beam counter ``vidxai/name`` (read back into ``run.json``)."""
    beam.metrics.Metrics.counter("vidxai", name).inc(n)
