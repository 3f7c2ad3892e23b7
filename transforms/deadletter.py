"""The one place where a failing clip becomes a dead letter instead of failing the run."""

from __future__ import annotations

import logging
import time

import apache_beam as beam

from transforms.records import ErrorRecord, clip_ref

ERRORS = "errors"
log = logging.getLogger(__name__)


class DeadLetterFn(beam.DoFn):
    """Applies :meth:`apply` to each clip; any exception → ErrorRecord on tag ``errors``.

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
        except Exception as exc:  # noqa: BLE001 - every clip failure is a dead letter
            ref = clip_ref(element)
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
