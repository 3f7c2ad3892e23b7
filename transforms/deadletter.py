"""The one place where a failing clip becomes a dead letter instead of failing the run."""

from __future__ import annotations

import logging

import apache_beam as beam

from pipeline.records import ClipData, ClipFlow, ClipRef, ClipTubes, ErrorRecord

ERRORS = "errors"
log = logging.getLogger(__name__)


def clip_ref(element) -> ClipRef:
    """The ClipRef inside any stage record."""
    while not isinstance(element, ClipRef):
        if isinstance(element, (ClipFlow, ClipTubes)):
            element = element.clip
        elif isinstance(element, ClipData):
            element = element.ref
        else:
            raise TypeError(f"not a clip record: {type(element).__name__}")
    return element


class DeadLetterFn(beam.DoFn):
    """Applies :meth:`apply` to each clip; any exception → ErrorRecord on tag ``errors``.

    Subclasses set ``stage`` and implement ``apply(element) -> iterable of outputs``.
    """

    stage = "stage"

    def apply(self, element):  # pragma: no cover - abstract
        raise NotImplementedError

    def process(self, element):
        try:
            yield from self.apply(element)
        except Exception as exc:  # noqa: BLE001 - every clip failure is a dead letter
            ref = clip_ref(element)
            log.warning("clip %s (%s) failed in %s: %s: %s", ref.clip_id, ref.video,
                        self.stage, type(exc).__name__, exc)
            beam.metrics.Metrics.counter("vidxai", "clips_failed").inc()
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorRecord.of(ref.clip_id, ref.video,
                                                                  self.stage, exc))
