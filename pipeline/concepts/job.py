"""The concepts job: options → features of every clip (cached) → TCAV rows → ``OUT/concepts/``.

``run(argv)`` validates everything before any work (one-line ValueErrors), then runs two Beam
pipelines on the same runner: (1) the layer features of every clip the cache does not hold
yet (decode, static twins, tube proposals for ``--discover``, activations and class-logit
gradients through the model handler), (2) the scores, one layer per element, and the
significance decision over all of them. Columns and options: docs/CONCEPTS.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.concepts.listing import list_concepts, list_inputs, resolve_targets
from pipeline.concepts.options import ConceptOptions, parse
from pipeline.job import new_run_id
from pipeline.options import with_default_runner
from pipeline.outputs import iter_tables, versions
from pipeline.strict_args import check_known_args
from transforms import tcav
from transforms.model_handler import ModelConfig, VideoModelHandler
from transforms.records import ClipRef
from transforms.sink import write_parquet_atomic
from transforms.tcav_score import (
    ClassClips,
    ConceptSet,
    DecideAndWrite,
    ScoreLayerFn,
    TcavPlan,
)
from transforms.tcav_stages import (
    ConceptClip,
    FeatureSettings,
    FeaturesFn,
    ProposeFn,
    read_features,
)

CONCEPTS, CACHE, ERRORS, RUNS = "concepts", "concepts_cache", "concepts_errors", "concepts_runs"


def _join(root: str, *parts: str) -> str:
    return FileSystems.join(root, *parts)


def resolve_layers(handler: VideoModelHandler, wanted: Sequence[str], num_frames: int,
                   size: int) -> tuple[list[str], list[str]]:
    """(layers to use, degenerate candidates skipped by the default).

    Default: the two deepest 5-D modules among the Grad-CAM layer and its siblings up to it,
    skipping those where the class gradient is the same for every input (probed with two
    random clips: a layer followed only by global pooling and a linear layer).

    Raises:
        ValueError: a named layer is unknown or not 5-D (the message lists the 5-D layers).
    """
    net, _ = handler.build()
    logits = net
    probe = torch.randn(2, 3, num_frames, size, size, generator=torch.Generator().manual_seed(0))
    five = tcav.five_d_layers(net, logits, probe[:1])
    if wanted:
        for name in wanted:
            if name not in five:
                raise ValueError(f"--layers: {name!r} is not a 5-D layer of {handler.config.model}"
                                 f"; its 5-D layers: {', '.join(five)}")
        return list(wanted), []
    gradcam = handler.spec().gradcam_layer
    if gradcam in five:
        parent = gradcam.rsplit(".", 1)[0] if "." in gradcam else ""
        cands = [n for n in five[:five.index(gradcam) + 1]
                 if (n.rsplit(".", 1)[0] if "." in n else "") == parent]
    else:
        cands = [n for n in five if "." not in n]
    feats = tcav.layer_features(net, logits, probe, cands, [0])
    degenerate = [n for n in cands if tcav.is_degenerate(feats[n][1])]
    usable = [n for n in cands if n not in degenerate]
    return (usable[-2:] if usable else cands[-2:]), degenerate


def reject_explanation_flags(argv: Sequence[str]) -> None:
    """The explanation job's own flags (``--stride``, ``--methods``, ...) would pass Beam's
    check silently and do nothing here: refuse them in one line."""
    from pipeline.config import declared_options

    theirs = {o.flag for o in declared_options().values() if o.flag}
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in theirs:
            raise ValueError(f"option {flag} belongs to the explanation job, not to "
                             "'concepts' (run_pipeline.py concepts --help)")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Everything the run needs, validated."""

    opts: ConceptOptions
    options: PipelineOptions
    handler: VideoModelHandler
    weights_sha256: str
    settings: FeatureSettings
    layers: tuple[str, ...]
    degenerate_skipped: tuple[str, ...]
    class_names: tuple[str, ...]
    inputs: tuple[ClipRef, ...]
    targets: dict
    concepts: dict
    random: tuple[ClipRef, ...]


def prepare(argv: Sequence[str]) -> Prepared:
    """Parse and validate every option and input before any work (one-line ValueErrors)."""
    opts, beam_argv = parse(argv)
    check_known_args(beam_argv)
    reject_explanation_flags(beam_argv)
    options = with_default_runner(PipelineOptions(beam_argv))
    handler = VideoModelHandler(
        ModelConfig(model=opts.model, checkpoint=opts.checkpoint, num_frames=opts.num_frames,
                    size=opts.size, class_names=opts.class_names, seed=opts.seed),
        device=opts.device, threads=opts.threads)
    sha = handler.validate()
    spec = handler.spec()
    names = tuple(handler.class_names() or [str(i) for i in range(spec.num_classes)])
    num_frames, size = opts.num_frames or spec.num_frames, opts.size or spec.input_size
    layers, skipped = resolve_layers(handler, opts.layers, num_frames, size)
    inputs = list_inputs(opts.input, "--input", num_frames, opts.frame_stride, names)
    targets = resolve_targets(opts.targets, inputs, names, spec.num_classes)
    concepts = list_concepts(opts.concepts, num_frames, opts.frame_stride,
                             opts.min_concept_clips)
    random = (list_inputs(opts.random, "--random", num_frames, opts.frame_stride, names)
              if opts.random else inputs)
    key = hashlib.sha256(json.dumps([sha, opts.model, spec.mean, spec.std, num_frames, size,
                                     opts.frame_stride, spec.resize_ratio, opts.pool]
                                    ).encode()).hexdigest()[:16]
    settings = FeatureSettings(
        model=opts.model, layers=tuple(layers), pool=opts.pool, num_frames=num_frames,
        size=size, resize_ratio=spec.resize_ratio, frame_stride=opts.frame_stride,
        cache_key=key, mean=spec.mean, batch_size=opts.batch_size,
        tube_stride=max(1, size // 14), box_size=2 * max(1, size // 14),
        tubes_per_clip=opts.tubes_per_clip)
    check_random_pool(opts, concepts, random)
    return Prepared(opts, options, handler, sha, settings, tuple(layers), tuple(skipped), names,
                    tuple(inputs), targets, concepts, tuple(random))


def check_random_pool(opts: ConceptOptions, concepts: dict, random: Sequence[ClipRef]) -> None:
    """Every concept's runs can draw a random set and the two null sets (2k distinct clips).

    Raises:
        ValueError: naming the first concept whose runs cannot be drawn.
    """
    sizes = {name: len(refs) for name, refs in concepts.items()}
    if opts.discover:
        sizes["(discovered)"] = opts.discover_members
    ids = {r.clip_id for r in random}
    for name, n in sizes.items():
        own = {r.clip_id for r in concepts.get(name, ())}
        k = max(2, int(round(opts.concept_fraction * n)))
        if len(ids - own) < 2 * k:
            raise ValueError(f"concept {name!r}: its runs draw {k}-clip sets, so the random "
                             f"pool needs at least {2 * k} clips besides its own; it has "
                             f"{len(ids - own)} (give more --random clips or a lower "
                             f"--concept-fraction)")


def feature_items(prep: Prepared) -> list[ConceptClip]:
    """Every clip whose features the run needs, variants and classes merged by clip id."""
    wanted: dict[str, ConceptClip] = {}

    def add(ref: ClipRef, variants: tuple[str, ...], classes: tuple[int, ...] = ()):
        old = wanted.get(ref.clip_id)
        if old is not None:
            variants = tuple(dict.fromkeys(old.variants + variants))
            classes = tuple(sorted(set(old.classes) | set(classes)))
        wanted[ref.clip_id] = ConceptClip(ref, variants, classes)

    per_clip: dict[str, list[int]] = {}
    for k, ids in prep.targets.items():
        for i in ids:
            per_clip.setdefault(i, []).append(k)
    for ref in prep.inputs:
        add(ref, ("dynamic",), tuple(per_clip.get(ref.clip_id, ())))
    for ref in prep.random:
        add(ref, ("dynamic", "static"))
    for refs in prep.concepts.values():
        for ref in refs:
            add(ref, ("dynamic", "static"))
    return list(wanted.values())


def cached(prep: Prepared) -> dict[str, dict[str, set[int]]]:
    """clip_id → variant → classes with gradients, held by the cache for every layer."""
    root, s = _join(prep.opts.output, CACHE), prep.settings
    per_layer = []
    for layer in prep.layers:
        have: dict[str, dict[str, set[int]]] = {}
        for row in read_features(root, s.model, layer, s.cache_key,
                                 ("clip_id", "variant", "classes")):
            have.setdefault(row["clip_id"], {})[row["variant"]] = set(row["classes"] or ())
        per_layer.append(have)
    out: dict[str, dict[str, set[int]]] = {}
    for clip_id, variants in (per_layer[0] if per_layer else {}).items():
        for v, classes in variants.items():
            if all(v in h.get(clip_id, {}) for h in per_layer[1:]):
                out.setdefault(clip_id, {})[v] = classes
    return out


def missing(items: Sequence[ConceptClip], have: dict) -> list[ConceptClip]:
    """The items (with only their missing variants) the cache cannot serve."""
    out = []
    for item in items:
        got = have.get(item.ref.clip_id, {})
        need = tuple(v for v in item.variants
                     if v not in got or (v == "dynamic" and not set(item.classes) <= got[v]))
        if need:
            out.append(dataclasses.replace(item, variants=need))
    return out


def write_errors(root: str, run_id: str, errors: list) -> None:
    if not errors:
        return
    table = pa.Table.from_pylist([{**dataclasses.asdict(e), "run_id": run_id} for e in errors])
    write_parquet_atomic(_join(root, ERRORS, f"part-{run_id}.parquet"), table)


def run_features(prep: Prepared, todo: list[ConceptClip], proposals_from: list[ConceptClip],
                 run_id: str, test_pipeline: beam.Pipeline | None = None) -> None:
    """Pipeline 1: features of ``todo`` and of the tube proposals of ``proposals_from``."""
    if not todo and not proposals_from:
        return
    root, s = prep.opts.output, prep.settings
    p = test_pipeline or beam.Pipeline(options=prep.options)
    clips = p | "Clips" >> beam.Create(todo)
    if proposals_from:
        proposed = (p | "InputsToMine" >> beam.Create(proposals_from)
                    | "SpreadInputs" >> beam.Reshuffle()
                    | "Propose" >> beam.ParDo(ProposeFn(s)))
        clips = (clips, proposed) | "AllClips" >> beam.Flatten()
    out = (clips | "Spread" >> beam.Reshuffle()
           # fixed size: Beam's adaptive batching would aim at ~1 s batches (and warn on
           # every batch while it fits its timing model)
           | "Batch" >> beam.BatchElements(min_batch_size=s.batch_size,
                                           max_batch_size=s.batch_size)
           | "Features" >> beam.ParDo(FeaturesFn(prep.handler, s, _join(root, CACHE))
                                      ).with_outputs("errors", main="committed"))
    (out.errors | "AllErrors" >> beam.combiners.ToList()
     | "WriteErrors" >> beam.Map(lambda errs: write_errors(root, run_id, errs)))
    p.run().wait_until_finish()


def listing_order(ids: Sequence[str], by_id: dict[str, ClipRef]) -> list[int]:
    """Indices that put tube proposals ``CLIPID#tubeN`` in (video, start frame, tube) order.

    Not the ids' order: an id hashes the video's path, and k-means depends on its input's
    order, so sorting by id made the discovered concepts change when the dataset moved.
    """
    def place(i: int) -> tuple[str, int, int]:
        base, tube = ids[i].split("#tube")
        return by_id[base].video, by_id[base].start_frame, int(tube)

    return sorted(range(len(ids)), key=place)


def discovered_concepts(prep: Prepared) -> list[ConceptSet]:
    """``--discover K``: k-means of the input clips' tube proposals (dynamic activations at
    the deepest layer); each cluster's members nearest its centre form a concept."""
    opts, s = prep.opts, prep.settings
    by_id = {r.clip_id: r for r in prep.inputs}
    ids, emb = [], []
    for row in read_features(_join(opts.output, CACHE), s.model, prep.layers[-1], s.cache_key,
                             ("clip_id", "variant", "values")):
        base = row["clip_id"].split("#tube")[0]
        if "#tube" in row["clip_id"] and base in by_id and row["variant"] == "dynamic":
            ids.append(row["clip_id"])
            emb.append(np.asarray(row["values"], np.float32))
    order = listing_order(ids, by_id)
    ids, emb = [ids[i] for i in order], np.stack([emb[i] for i in order])
    groups = tcav.cluster_concepts(emb, opts.discover, opts.discover_members, seed=0)
    out = []
    for c, members in enumerate(groups):
        if len(members) < opts.min_concept_clips:
            continue
        chosen = [ids[i] for i in members]
        examples = []
        for cid in chosen:
            base, tube = cid.split("#tube")
            ref = by_id[base]
            examples.append(f"{ref.video}@{ref.start_frame}#tube{tube}")
        out.append(ConceptSet(f"discovered_{c:02d}", "discovered", tuple(chosen),
                              tuple(examples)))
    return out


def done_rows(output: str, model: str, sha: str) -> set[tuple]:
    """(concept, kind, layer, class_index, config_hash) already in ``OUT/concepts``."""
    out = set()
    for _, t in iter_tables(_join(output, CONCEPTS), ["concept", "kind", "layer", "class_index",
                                                      "config_hash", "weights_sha256",
                                                      "model"], {"model": model}):
        for r in t.to_pylist():
            if r["weights_sha256"] == sha:
                out.add((r["concept"], r["kind"], r["layer"], r["class_index"],
                         r["config_hash"]))
    return out


def make_plan(prep: Prepared, run_id: str, concepts: list[ConceptSet]) -> TcavPlan:
    opts, s = prep.opts, prep.settings
    sha = prep.weights_sha256
    config_hash = hashlib.sha256(json.dumps(
        [s.cache_key, opts.random_runs, opts.concept_fraction, opts.cav_classifier,
         opts.alpha, opts.min_cav_accuracy]).encode()).hexdigest()[:16]
    classes = tuple(ClassClips(k, prep.class_names[k], tuple(ids))
                    for k, ids in prep.targets.items())
    plan = TcavPlan(
        cache_root=_join(opts.output, CACHE), output=_join(opts.output, CONCEPTS),
        model=opts.model, weights_sha256=sha, cache_key=s.cache_key, config_hash=config_hash,
        run_id=run_id, concepts=tuple(concepts),
        random_ids=tuple(r.clip_id for r in prep.random), classes=classes,
        runs=opts.random_runs, fraction=opts.concept_fraction, classifier=opts.cav_classifier,
        alpha=opts.alpha, min_accuracy=opts.min_cav_accuracy)
    have = done_rows(opts.output, opts.model, sha)
    done = frozenset((c.name, kind, layer, k.index) for c in concepts
                     for kind in ("dynamic", "static") for layer in prep.layers
                     for k in classes
                     if (c.name, kind, layer, k.index, plan.concept_hash(c)) in have)
    return dataclasses.replace(plan, done=done)


def run_scores(prep: Prepared, plan: TcavPlan, test_pipeline: beam.Pipeline | None = None
               ) -> None:
    """Pipeline 2: one element per layer → rows → significance over all → Parquet."""
    p = test_pipeline or beam.Pipeline(options=prep.options)
    (p | "Layers" >> beam.Create(list(prep.layers))
     | "SpreadLayers" >> beam.Reshuffle()
     | "Score" >> beam.ParDo(ScoreLayerFn(plan))
     | "Write" >> DecideAndWrite(plan))
    p.run().wait_until_finish()


def run(argv: Sequence[str] | None = None) -> dict:
    """Run the concepts job; returns the run record (also ``OUT/concepts_runs/<id>.json``).

    Raises:
        ValueError: a bad option or input (before any work).
    """
    t0, run_id = time.perf_counter(), new_run_id()
    prep = prepare(list(argv or []))
    opts = prep.opts
    items = feature_items(prep)
    have = cached(prep)
    todo = missing(items, have)
    mine = []
    if opts.discover:
        mined = {cid.split("#tube")[0] for cid in have if "#tube" in cid}
        mine = [ConceptClip(r) for r in prep.inputs if r.clip_id not in mined]
    run_features(prep, todo, mine, run_id)
    concepts = [ConceptSet(name, "user", tuple(r.clip_id for r in refs),
                           tuple(f"{r.video}@{r.start_frame}" if r.start_frame else r.video
                                 for r in refs))
                for name, refs in prep.concepts.items()]
    if opts.discover:
        concepts += discovered_concepts(prep)
    plan = make_plan(prep, run_id, concepts)
    run_scores(prep, plan)
    written = [r for _, t in iter_tables(_join(opts.output, CONCEPTS), None,
                                         {"model": opts.model})
               for r in t.to_pylist() if r["run_id"] == run_id]
    info = {
        "run_id": run_id, "seconds": round(time.perf_counter() - t0, 3),
        "argv": list(argv or []), "options": dataclasses.asdict(opts),
        "layers": list(prep.layers), "degenerate_layers_skipped": list(prep.degenerate_skipped),
        "weights_sha256": plan.weights_sha256, "config_hash": plan.config_hash,
        "cache_key": prep.settings.cache_key,
        "clips_needed": len(items), "clips_featured": len(todo), "clips_cached":
            len(items) - len(todo), "proposal_clips_mined": len(mine),
        "concepts": [c.name for c in concepts], "rows_written": len(written),
        "rows_already_done": len(plan.done), "versions": versions(),
    }
    with FileSystems.create(_join(opts.output, RUNS, f"{run_id}.json")) as fh:
        fh.write(json.dumps(info, indent=2, default=str).encode())
    info["rows"] = written
    return info


def summary(info: dict) -> str:
    """A short table: per class and layer, the concepts by score with their significance."""
    rows = sorted(info["rows"], key=lambda r: (r["class_name"], r["layer"], r["kind"],
                                               -r["score_mean"]))
    lines = [f"{'class':<16} {'layer':<10} {'concept':<22} {'kind':<8} {'score':>13} "
             f"{'null':>5} {'p':>9} {'acc':>5}  result"]
    for r in rows:
        verdict = (r["direction"] if r["direction"] in ("excluded",) else
                   ("significant " + r["direction"] if r["significant"] else "not significant"))
        if r["degenerate_layer"]:
            verdict += " (degenerate layer)"
        lines.append(f"{r['class_name']:<16} {r['layer']:<10} {r['concept']:<22} "
                     f"{r['kind']:<8} {r['score_mean']:.2f} ± {r['score_std']:.2f} "
                     f"{r['null_mean']:>5.2f} {r['p']:>9.2g} {r['cav_accuracy_mean']:>5.2f}"
                     f"  {verdict}")
    m = rows[0]["bonferroni_m"] if rows else 0
    lines.append(f"\nBonferroni m = {m} tests, alpha = {info['options']['alpha']}; layers "
                 f"{', '.join(info['layers'])}"
                 + (f" (skipped as degenerate: {', '.join(info['degenerate_layers_skipped'])})"
                    if info["degenerate_layers_skipped"] else ""))
    return "\n".join(lines)
