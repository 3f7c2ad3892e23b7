"""Video-TCAV: a synthetic concept world, and the time and memory of the concepts job's stages.

    python -m benchmarks.tcav [--concept-clips 200] [--runs 20] [--models synth_small3d,r3d_18]

For each network: 200 concept clips × 2 layers × R = 20 on the synthetic world; it prints the
seconds of each stage — activations (forward only: concept and random clips, and their static
twins), gradients (forward + one backward per class: the tested clips), CAV training and scoring
— measured side by side in one process, and the peak resident memory after each stage. As in
the job, CAVs are trained and scored one layer at a time (the features kept are the pooled
ones: a few MB). r3d_18 runs with random weights (timing only). Output and readings:
docs/CONCEPTS.md.

:func:`make_world` (also used by tests/test_concepts.py) writes the world: concept folders of
clips the network never saw (the red target disc alone, moving right / left), held-out input
clips with labels, and random clips.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.apps import synth

SIZE, FRAMES = 64, 16  # synth_small3d's input: 128-px renders resized by half (as trained)


def render(seed: int, label: int, index: int, alone: bool = False, boxes: bool = False):
    """uint8 (16, 64, 64, 3) of one synthetic clip; ``alone``: the target disc only (no
    distractors, static camera); ``boxes``: also the target's box per frame (64-px pixels)."""
    params = synth.sample_clip_params(synth.clip_rng(seed, label, index), label, 128, FRAMES,
                                      camera_pan=not alone, decoy=False)
    if alone:
        params = dataclasses.replace(params, distractors=(), camera_velocity=(0.0, 0.0))
    frames, masks = synth.render_clip(params)
    small = np.stack([cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in frames])
    if not boxes:
        return small
    return small, [None if b is None else [v / 2 for v in b]
                   for b in synth.boxes_from_masks(masks)]


def write(path: Path, frames: np.ndarray) -> str:
    synth.write_video(path, frames)
    return str(path)


def make_world(root: Path, concept_clips: int = 12, inputs_per_class: int = 8,
               random_clips: int = 40, random_concepts: int = 0, reversed_right: bool = False,
               concepts: tuple[str, ...] = ("move_right", "move_left"), seed: int = 50
               ) -> dict[str, Path]:
    """Write the world under ``root``; returns its paths.

    Layout: ``concepts/<name>/*.avi`` (the disc alone moving in the class direction; with
    ``reversed_right`` also ``right_reversed``: the ``move_right`` clips reversed in time;
    ``random_k``: random scene clips), ``random/*.avi`` (scene clips of every class),
    ``input.jsonl`` (held-out scene clips with labels). Seeds differ from the training set's.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name in concepts:
        label = synth.CLASS_NAMES.index(name)
        for i in range(concept_clips):
            frames = render(seed + 1, label, i, alone=True)
            write(root / "concepts" / name / f"{i:03d}.avi", frames)
            if reversed_right and name == "move_right":
                write(root / "concepts" / "right_reversed" / f"{i:03d}.avi", frames[::-1])
    for k in range(random_concepts):
        for i in range(concept_clips):
            frames = render(seed + 4 + k, i % 4, i)
            write(root / "concepts" / f"random_{k:02d}" / f"{i:03d}.avi", frames)
    for i in range(random_clips):
        write(root / "random" / f"{i:03d}.avi", render(seed + 2, i % 4, i))
    rows = []
    for label in range(4):
        for i in range(inputs_per_class):
            frames, boxes = render(seed + 3, label, i, boxes=True)
            path = write(root / "input" / f"{label}_{i:03d}.avi", frames)
            rows.append({"video": path, "label": label, "boxes": boxes})
    (root / "input.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"concepts": root / "concepts", "random": root / "random",
            "input": root / "input.jsonl"}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_model(model: str, concept_clips: int, runs: int, layers: tuple[str, ...] | None,
                work: Path) -> dict:
    """Stage times for one network (the job's own functions, called stage by stage)."""
    import torch

    from transforms import tcav
    from transforms.model_handler import ModelConfig, VideoModelHandler

    handler = VideoModelHandler(ModelConfig(model=model))
    scorer = handler.load_model()
    spec = handler.spec()
    size = spec.input_size
    layers = layers or tuple(_default_layers(handler, spec))
    rng = np.random.default_rng(0)
    clips = [render(60, i % 4, i) for i in range(8)]

    def clip(i: int) -> np.ndarray:  # 8 distinct renders, resized to the network's input
        f = clips[i % 8]
        return np.stack([cv2.resize(x, (size, size)) for x in f]) if size != SIZE else f

    batch = 4
    out: dict = {"model": model, "layers": list(layers), "concept_clips": concept_clips,
                 "runs": runs, "input": f"{spec.num_frames}x{size}x{size}"}
    k = int(round(2 / 3 * concept_clips))  # the job's default subsample
    n_random = 2 * k + 4  # the null draws two disjoint k-clip sets from the pool
    n_feat = 2 * (concept_clips + n_random)  # concept + random clips, each with its static twin
    t = time.perf_counter()
    feats = {name: [] for name in layers}
    for start in range(0, n_feat, batch):
        x = torch.stack([scorer.to_input(clip(start + j)) for j in range(batch)])
        for name, (acts, _) in tcav.layer_features(scorer.model, scorer.logits, x, layers,
                                                   ()).items():
            feats[name].append(acts)
    out["activations_s"] = time.perf_counter() - t
    out["activations_clips"] = n_feat
    out["peak_mb_after_activations"] = peak_mb()
    n_grad = concept_clips  # tested clips, one class each
    t = time.perf_counter()
    grads = {name: [] for name in layers}
    for start in range(0, n_grad, batch):
        x = torch.stack([scorer.to_input(clip(start + j)) for j in range(batch)])
        for name, (_, g) in tcav.layer_features(scorer.model, scorer.logits, x, layers,
                                                [0]).items():
            grads[name].append(g[:, 0])
    out["gradients_s"] = time.perf_counter() - t
    out["gradient_clips"] = n_grad
    out["peak_mb_after_gradients"] = peak_mb()
    train_s = score_s = 0.0
    for name in layers:  # one layer at a time, as the scoring stage does
        acts = np.concatenate(feats[name])
        acts = acts + rng.normal(0, acts.std() * 0.1 + 1e-6, acts.shape).astype(np.float32)
        g = np.concatenate(grads[name])
        concept, random = acts[:concept_clips], acts[concept_clips:concept_clips + n_random]
        draws = tcav.draw_runs(len(concept), len(random), runs, 0)
        for r, d in enumerate(draws):
            t = time.perf_counter()
            cav = tcav.train_cav(concept[d.concept], random[d.random], r)
            ref = tcav.train_cav(random[d.null_a], random[d.null_b], r + 1)
            train_s += time.perf_counter() - t
            t = time.perf_counter()
            tcav.tcav_score(tcav.directional_derivatives(g, cav.vector))
            tcav.tcav_score(tcav.directional_derivatives(g, ref.vector))
            score_s += time.perf_counter() - t
        out[f"features_{name}"] = int(acts.shape[1])
    out["cav_training_s"], out["scoring_s"] = train_s, score_s
    out["peak_mb_end"] = peak_mb()
    return out


def _default_layers(handler, spec) -> list[str]:
    from pipeline.concepts.job import resolve_layers

    return resolve_layers(handler, (), spec.num_frames, spec.input_size)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept-clips", type=int, default=200)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--models", default="synth_small3d,r3d_18")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            r = bench_model(model, args.concept_clips, args.runs, None, Path(tmp))
            print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
