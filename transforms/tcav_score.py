"""Video-TCAV scoring stage: one layer's cached features → one row per (concept, kind, class).

A row holds the R run scores of the concept and of the random-vs-random null; significance
(Welch t-test, Bonferroni over every test of the run) is decided once all rows exist
(:func:`decide`), because m is the number of tests. Columns: ``docs/CONCEPTS.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms import tcav
from transforms.sink import identity_key, write_parquet_atomic
from transforms.tcav_stages import read_features

KINDS = ("dynamic", "static")


@dataclass(frozen=True)
class ConceptSet:
    """A concept: its name, where it came from and its clips.

    Attributes:
        source: ``user`` (a ``--concepts`` folder) or ``discovered`` (``--discover``).
        clip_ids: its clips' identities in the feature cache.
        examples: what a reader can look at: video paths, or ``clip_id#tubeN`` for
            discovered concepts (the tube of the input clip whose region was kept).
    """

    name: str
    source: str
    clip_ids: tuple[str, ...]
    examples: tuple[str, ...]


@dataclass(frozen=True)
class ClassClips:
    """A tested class and the clips whose gradients of its logit are used."""

    index: int
    name: str
    clip_ids: tuple[str, ...]


@dataclass(frozen=True)
class TcavPlan:
    """Everything the scoring stage needs (picklable; built and validated on the driver)."""

    cache_root: str
    output: str
    model: str
    weights_sha256: str
    cache_key: str
    config_hash: str
    run_id: str
    concepts: tuple[ConceptSet, ...]
    random_ids: tuple[str, ...]
    classes: tuple[ClassClips, ...]
    runs: int = 20
    fraction: float = 2 / 3
    classifier: str = "sgd"
    alpha: float = 0.05
    min_accuracy: float = 0.6
    done: frozenset = frozenset()  # (concept, kind, layer, class_index) already in the output

    def concept_hash(self, concept: ConceptSet) -> str:
        """config_hash of one concept's rows: the run's settings and every clip they use."""
        text = json.dumps([self.config_hash, concept.name, sorted(concept.clip_ids),
                           sorted(self.random_ids),
                           [(c.index, sorted(c.clip_ids)) for c in self.classes]])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_layer(plan: TcavPlan, layer: str) -> tuple[dict, dict]:
    """(clip_id, variant) → activations (D,), and clip_id → {class: gradient (D,)}."""
    acts, grads = {}, {}
    for row in read_features(plan.cache_root, plan.model, layer, plan.cache_key):
        acts[(row["clip_id"], row["variant"])] = np.asarray(row["values"], np.float32)
        if row["classes"]:
            g = np.asarray(row["grads"], np.float32).reshape(len(row["classes"]), -1)
            grads.setdefault(row["clip_id"], {}).update(zip(row["classes"], g, strict=True))
    return acts, grads


def score_layer(plan: TcavPlan, layer: str) -> list[dict]:
    """Rows (without the significance decision) of every concept, kind and class at ``layer``.

    Raises:
        ValueError: a class has no clip with a gradient, or a random pool too small.
    """
    acts, grads = load_layer(plan, layer)
    class_grads = []
    for c in plan.classes:
        g = [grads[i][c.index] for i in c.clip_ids if c.index in grads.get(i, {})]
        if not g:
            raise ValueError(f"class {c.name}: no clip of --input could be scored")
        class_grads.append(np.stack(g))
    degenerate = any(tcav.is_degenerate(g[:, None]) for g in class_grads)
    rows = []
    for concept in plan.concepts:
        chash = plan.concept_hash(concept)
        for kind in KINDS:
            todo = [c for c in plan.classes
                    if (concept.name, kind, layer, c.index) not in plan.done]
            if not todo:
                continue
            own = set(concept.clip_ids)
            pos = [acts[(i, kind)] for i in concept.clip_ids if (i, kind) in acts]
            neg = [acts[(i, kind)] for i in plan.random_ids
                   if (i, kind) in acts and i not in own]
            seed = tcav.derive_seed(concept.name, kind, layer)
            draws = tcav.draw_runs(len(pos), len(neg), plan.runs, seed, plan.fraction)
            wanted = [plan.classes.index(c) for c in todo]
            runs = tcav.concept_runs(np.stack(pos), np.stack(neg),
                                     [class_grads[k] for k in wanted], draws, seed,
                                     plan.classifier)
            for j, c in enumerate(todo):
                s, null = runs.scores[:, j], runs.null[:, j]
                rows.append({
                    "concept": concept.name, "kind": kind, "layer": layer,
                    "class_index": c.index, "class_name": c.name,
                    "scores": s.tolist(), "score_mean": float(s.mean()),
                    "score_std": float(s.std(ddof=1)) if len(s) > 1 else 0.0,
                    "null_scores": null.tolist(), "null_mean": float(null.mean()),
                    "null_std": float(null.std(ddof=1)) if len(null) > 1 else 0.0,
                    "magnitude": float(runs.magnitudes[:, j].mean()),
                    "cav_accuracy_mean": float(runs.accuracies.mean()),
                    "cav_accuracy_min": float(runs.accuracies.min()),
                    "low_accuracy": bool(runs.accuracies.mean() < plan.min_accuracy),
                    "degenerate_layer": degenerate,
                    "concept_clips": len(pos), "random_pool": len(neg),
                    "class_clips": int(len(class_grads[plan.classes.index(c)])),
                    "runs": plan.runs, "source": concept.source,
                    "examples": list(concept.examples if concept.source == "discovered"
                                     else concept.examples[:8]),
                    "model": plan.model, "weights_sha256": plan.weights_sha256,
                    "config_hash": chash, "run_id": plan.run_id,
                })
    return rows


def decide(rows: Sequence[dict], alpha: float) -> list[dict]:
    """Significance of every row: Welch t-test, Bonferroni over the rows tested in this run.

    Rows whose CAVs are not better than ``--min-cav-accuracy`` are excluded: not tested, not
    counted in m, ``significant`` False, ``direction`` ``excluded``.
    """
    m = max(1, sum(1 for r in rows if not r["low_accuracy"]))
    out = []
    for r in rows:
        sig = tcav.significance(r["scores"], r["null_scores"], alpha, m)
        excluded = r["low_accuracy"]
        out.append({**r, "t": sig.t, "p": sig.p, "bonferroni_m": m, "alpha": alpha,
                    "significant": sig.significant and not excluded,
                    "direction": "excluded" if excluded else sig.direction})
    return out


CONCEPT_SCHEMA = pa.schema([
    ("concept", pa.string()), ("kind", pa.string()), ("class_index", pa.int32()),
    ("class_name", pa.string()), ("scores", pa.list_(pa.float64())),
    ("score_mean", pa.float64()), ("score_std", pa.float64()),
    ("null_scores", pa.list_(pa.float64())), ("null_mean", pa.float64()),
    ("null_std", pa.float64()), ("t", pa.float64()), ("p", pa.float64()),
    ("bonferroni_m", pa.int32()), ("alpha", pa.float64()), ("significant", pa.bool_()),
    ("direction", pa.string()), ("magnitude", pa.float64()),
    ("cav_accuracy_mean", pa.float64()), ("cav_accuracy_min", pa.float64()),
    ("low_accuracy", pa.bool_()), ("degenerate_layer", pa.bool_()),
    ("concept_clips", pa.int32()), ("random_pool", pa.int32()), ("class_clips", pa.int32()),
    ("runs", pa.int32()), ("source", pa.string()), ("examples", pa.list_(pa.string())),
    ("weights_sha256", pa.string()), ("config_hash", pa.string()), ("run_id", pa.string()),
])


def commit_rows(output: str, rows: Iterable[dict]) -> list[str]:
    """``output/model=M/layer=L/part-K.parquet`` per (model, layer); returns the paths."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["layer"]), []).append(r)
    paths = []
    for (model, layer), items in sorted(groups.items()):
        table = pa.Table.from_pylist(items, CONCEPT_SCHEMA)
        key = identity_key((r["concept"], r["kind"], str(r["class_index"]), r["config_hash"],
                            r["weights_sha256"]) for r in items)
        path = FileSystems.join(output, f"model={quote(model, safe='')}",
                                f"layer={quote(layer, safe='')}", f"part-{key}.parquet")
        write_parquet_atomic(path, table)
        paths.append(path)
    return paths


# --- Beam wrappers ---


class ScoreLayerFn(beam.DoFn):
    """A layer name → its rows (activations of one layer in memory at a time)."""

    def __init__(self, plan: TcavPlan) -> None:
        self.plan = plan

    def process(self, layer: str):
        yield from score_layer(self.plan, layer)


class DecideAndWrite(beam.PTransform):
    """Rows of every layer → significance over all of them → committed Parquet files."""

    def __init__(self, plan: TcavPlan) -> None:
        super().__init__()
        self.plan = plan

    def expand(self, rows):
        plan = self.plan

        def write(all_rows):
            return commit_rows(plan.output, decide(all_rows, plan.alpha))

        return (rows | "AllRows" >> beam.combiners.ToList()
                | "Decide" >> beam.FlatMap(write))
