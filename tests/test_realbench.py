"""The real-footage benchmark generator: composite geometry, and a tiny run with the real I3D
whose kept / rejected verdicts are checked against the thresholds and an independent blanking."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.apps import realbench
from pipeline.apps.compose import SIDE
from pipeline.apps.realbench import FRAMES, Settings, margin
from transforms.decode import decode_clip
from transforms.io import read_manifest
from transforms.records import ClipRef


def _clips(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (FRAMES, SIDE, SIDE, 3)
    return (rng.integers(0, 256, shape, dtype=np.uint8),
            rng.integers(0, 256, shape, dtype=np.uint8))


@pytest.mark.parametrize("kind", realbench.KINDS)
def test_composite_puts_the_evidence_exactly_in_its_truth(kind: str) -> None:
    settings = Settings()
    evidence, background = _clips(1)
    background[:, :, :, 0] = 7  # the evidence never has this red at every pixel of a frame
    for i in range(20):
        frames, box, frame_range, _ = realbench.sample_composite(
            np.random.default_rng([3, i]), kind, evidence, background, settings)
        again = realbench.sample_composite(np.random.default_rng([3, i]), kind, evidence,
                                           background, settings)
        assert np.array_equal(frames, again[0]) and box == again[1]  # seeded
        assert frames.shape == evidence.shape
        inside = np.zeros(frames.shape[:3], dtype=bool)
        if kind == "temporal":
            assert box is None
            a, b = frame_range
            lo, hi = settings.range_len
            assert 0 <= a < b <= FRAMES and lo <= b - a <= hi
            assert np.array_equal(frames[a:b], evidence[:b - a])
            inside[a:b] = True
        else:
            assert frame_range is None
            x0, y0, x1, y1 = box
            m, crop = margin(settings.crop), settings.crop
            assert m <= x0 < x1 <= m + crop and m <= y0 < y1 <= m + crop  # inside what I3D sees
            inside[:, y0:y1, x0:x1] = True
            if kind == "side":
                assert y1 - y0 == crop and (x0 == m or x1 == m + crop)
        # outside the truth: the background (or its still), untouched, except the side column
        # that runs on past the crop into the margin the network never sees
        bg = realbench.still(background) if kind == "paste_still" else background
        crop_view = np.zeros_like(inside)
        m = margin(settings.crop)
        crop_view[:, m:m + settings.crop, m:m + settings.crop] = True
        outside = ~inside & crop_view
        assert np.array_equal(frames[outside], bg[outside])
        # inside: evidence pixels (resized for paste), never the background's red 7 everywhere
        assert not (frames[inside][:, 0] == 7).all()


def test_temporal_range_starts_halves_opens_or_closes_the_clip() -> None:
    evidence, background = _clips(2)
    settings = Settings(range_len=(8, 8), range_starts="halves")
    ranges = {realbench.sample_composite(np.random.default_rng([5, i]), "temporal", evidence,
                                         background, settings)[2] for i in range(40)}
    assert ranges == {(0, 8), (8, 16)}  # both halves drawn, nothing else
    short = Settings(range_len=(3, 5), range_starts="halves")
    for i in range(40):
        frames, _, (a, b), _ = realbench.sample_composite(
            np.random.default_rng([6, i]), "temporal", evidence, background, short)
        assert (a == 0 or b == FRAMES) and 3 <= b - a <= 5
        assert np.array_equal(frames[a:b], evidence[:b - a])
    anywhere = {realbench.sample_composite(np.random.default_rng([7, i]), "temporal", evidence,
                                           background, Settings(range_len=(4, 4)))[2][0]
                for i in range(60)}
    assert len(anywhere) > 4  # "any" (the default) starts inside the clip too
    with pytest.raises(ValueError, match="--range-starts must be one of halves, any"):
        Settings(range_starts="middle").check()


def test_rejection_reasons_follow_the_thresholds() -> None:
    s = Settings(min_p=0.05, max_left=0.2, min_kept=0.8)
    assert realbench.rejection(0.5, 0.1, 0.4, s) == []
    assert realbench.rejection(0.5, 0.11, 0.4, s) == ["truth not needed"]
    assert realbench.rejection(0.5, 0.1, 0.39, s) == ["truth not sufficient"]
    assert realbench.rejection(0.04, 0.0, 1.0, s) == ["not recognised"]
    assert realbench.rejection(0.5, float("nan"), float("nan"), s) == [
        "truth not needed", "truth not sufficient"]


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> tuple[Path, dict, object]:
    """A tiny benchmark with the real I3D and two real videos of the footage catalogue; skipped
    only when the weights or the videos cannot be fetched (reason printed)."""
    from models.i3d_weights import WeightsUnavailable
    from pipeline.apps.footage import FootageUnavailable, default_dest, fetch_all

    try:
        videos = fetch_all(default_dest(), names=("bigbuckbunny", "city"))
        scorer = realbench.load_scorer("fp32")
    except (WeightsUnavailable, FootageUnavailable) as exc:
        print(f"realbench inputs unavailable: {exc}")
        pytest.skip(f"realbench inputs unavailable: {exc}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = tmp_path_factory.mktemp("realbench")
    settings = Settings(seed=0, per_kind=1, kinds=("side", "temporal"), max_tries=3,
                        segments=1)
    summary = realbench.generate(out, scorer, videos, settings, log=lambda _: None)
    return out, summary, scorer


def test_tiny_benchmark_verdicts_match_the_thresholds(tiny_bench) -> None:
    out, summary, _ = tiny_bench
    settings = Settings(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in summary["settings"].items()})
    records = [json.loads(x) for x in (out / "evidence.jsonl").read_text().splitlines()]
    assert 2 <= len(records) == summary["tried"] <= 6
    assert any(r["kept"] for r in records), "nothing kept: the checks of kept ones are vacuous"
    for r in records:
        p, pt, pr = r["p"], r["p_blank_truth"], r["p_blank_rest"]
        recognised = p >= settings.min_p
        needed = recognised and pt <= settings.max_left * p
        sufficient = recognised and pr >= settings.min_kept * p
        assert r["kept"] == (recognised and needed and sufficient), r
        assert r["kept"] == (not r["reasons"]), r
        assert (out / "videos" / f"{r['id']}.avi").exists() == r["kept"]
    rows = [json.loads(x) for x in (out / "realbench.jsonl").read_text().splitlines()]
    assert len(rows) == sum(r["kept"] for r in records) == summary["kept"]


def test_tiny_benchmark_manifest_is_read_by_the_pipeline(tiny_bench) -> None:
    out, summary, scorer = tiny_bench
    manifest = out / "realbench.jsonl"
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    refs = list(read_manifest(str(manifest), FRAMES, 1, scorer.class_names))
    assert len(refs) == len(rows) and all(isinstance(r, ClipRef) for r in refs)
    for ref, row in zip(refs, rows, strict=True):
        assert scorer.class_names[ref.label] == row["label"]
        if row["kind"] == "temporal":
            a, b = ref.frame_range
            assert ref.boxes is None and 0 <= a < b <= FRAMES
        else:
            assert ref.frame_range is None and len(ref.boxes) == FRAMES
            for x0, y0, x1, y1 in ref.boxes:
                assert 0 <= x0 < x1 <= SIDE and 0 <= y0 < y1 <= SIDE


def test_kept_truth_blanked_independently_drops_p(tiny_bench) -> None:
    """Blank each kept composite's truth again, by hand on the decoded clip (the box shifted
    by the centre crop's margin, not through the pipeline's box mapping): the recorded p's
    come back."""
    out, summary, scorer = tiny_bench
    rows = [json.loads(x) for x in (out / "realbench.jsonl").read_text().splitlines()]
    spec = scorer.spec
    for row in rows:
        clip = decode_clip(str(out / row["video"]), 0, FRAMES, spec.input_size,
                           spec.resize_ratio)
        x = scorer.to_input(clip.frames)
        blanked, rest = x.clone(), torch.zeros_like(x)
        if row["kind"] == "temporal":
            a, b = row["frame_range"]
            blanked[:, a:b] = 0.0
            rest[:, a:b] = x[:, a:b]
        else:
            m = (SIDE - spec.input_size) // 2
            x0, y0, x1, y1 = (v - m for v in row["boxes"][0])
            blanked[:, :, y0:y1, x0:x1] = 0.0
            rest[:, :, y0:y1, x0:x1] = x[:, :, y0:y1, x0:x1]
        c = scorer.class_names.index(row["label"])
        with torch.inference_mode():
            p = scorer.probs(torch.stack([x, blanked, rest]))[:, c].tolist()
        assert p == pytest.approx([row["p"], row["p_blank_truth"], row["p_blank_rest"]],
                                  abs=2e-3, rel=0.02)


def test_round_robin_alternates_kinds_and_keeps_every_row() -> None:
    rows = [{"kind": k, "i": i} for i, k in enumerate("aaabcc")]
    out = realbench.round_robin(rows)
    assert [r["kind"] for r in out] == list("abcaca")
    assert sorted(r["i"] for r in out) == list(range(6))
    assert [r["i"] for r in out if r["kind"] == "a"] == [0, 1, 2]


def test_summarise_keeps_a_methods_settings_apart_and_reads_the_truth(tiny_bench, tmp_path):
    """A run holding one method at two configs: config a puts its whole map on one voxel inside
    each composite's truth, config b on one voxel outside it (truths found by hand: the box
    shifted by the crop margin, or the frame range). The per-kind mass is then exactly 1 and 0,
    one row per config; ``where`` narrows to one config (then unlabelled); an output whose videos
    are not the manifest's is refused, not summarised empty."""
    from tests.report_outputs import metric_row, saliency_row, write_output

    out, _, scorer = tiny_bench
    manifest = out / "realbench.jsonl"
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    side, m = scorer.spec.input_size, (SIDE - scorer.spec.input_size) // 2
    metrics, maps = [], []
    for i, row in enumerate(rows):
        if row["kind"] == "temporal":
            a, b = row["frame_range"]
            inside, outside = (a, 0, 0), ((b if b < FRAMES else a - 1), 0, 0)
        else:
            x0, y0, x1, y1 = (v - m for v in row["boxes"][0])
            inside = (0, (y0 + y1) // 2, (x0 + x1) // 2)
            outside = (0, (y0 + y1) // 2, x1 + 2 if x1 + 2 < side else x0 - 3)
        for config, voxel in (("a" * 16, inside), ("b" * 16, outside)):
            sal = np.zeros((FRAMES, side, side), np.float32)
            sal[voxel] = 1.0
            video = str(out / row["video"])
            metrics.append(metric_row(f"c{i}", "center", realbench.MODEL, video=video,
                                      config_hash=config, deletion_auc=0.1, insertion_auc=0.2,
                                      correct=True))
            maps.append(saliency_row(f"c{i}", "center", sal, realbench.MODEL, video=video,
                                     config_hash=config))
    run = write_output(tmp_path / "run", metrics, maps)
    text = realbench.summarise_run(str(run), manifest)
    n = len(rows)

    def cells(label: str, table: str) -> list[str]:
        (line,) = [x for x in table.splitlines() if x.startswith(f"| {label} |")]
        return [c.strip() for c in line.strip("|").split("|")][1:]

    evaluation, rest = text.split("per kind")
    per_kind, covers = rest.split("marks")
    for config, share in (("aaaaaa", "1.000 [1.000, 1.000]"), ("bbbbbb", "0.000 [0.000, 0.000]")):
        assert cells(f"center c:{config}", evaluation)[0] == str(n)  # clips: never pooled
        kinds = cells(f"center c:{config}", per_kind)
        assert kinds[-1] == f"{share} (n {n})" and all(k.startswith(share) for k in kinds)
    for config in ("aaaaaa", "bbbbbb"):  # one voxel of 16 · 224²: 0.000 to 3 decimals
        above_half, mean = cells(f"center c:{config}", covers)
        assert above_half == mean == f"0.000 [0.000, 0.000] (n {n})"
    only_a = realbench.summarise_run(str(run), manifest, ["config_hash=aaa"])
    only_a_kinds = only_a.split("marks")[0].split("per kind")[1]
    assert "c:" not in only_a
    assert cells("center", only_a_kinds)[-1] == f"1.000 [1.000, 1.000] (n {n})"
    elsewhere = [dict(r, video="/elsewhere/" + Path(r["video"]).name) for r in metrics]
    moved = write_output(tmp_path / "moved", elsewhere,
                         [dict(s, video="/elsewhere/x.avi") for s in maps])
    with pytest.raises(ValueError, match="no video of .* is a composite of"):
        realbench.summarise_run(str(moved), manifest)


def test_generator_verifies_with_the_network_given_at_its_own_view(tmp_path) -> None:
    """Another network than I3D (``synth_small3d``: 64 px, no crop margin, so it sees the whole
    256-px frame): each segment's recorded top class and p are that network's (re-scored by
    hand from the source video), each spatial candidate's truth share is its box's share of the
    whole frame (by hand from the drawn geometry; with I3D's 224-px view it would be larger), and
    the summary records the network. It does not use the pasted evidence (p ≈ 0.27 over 4
    classes, blanking changes nothing), so nothing is kept: the benchmark refuses truths the
    network does not use. A network of 8 frames is refused in one line."""
    from models.i3d_weights import WeightsUnavailable
    from pipeline.apps.footage import FootageUnavailable, default_dest, fetch_all

    try:
        videos = fetch_all(default_dest(), names=("bigbuckbunny", "city"))
    except (WeightsUnavailable, FootageUnavailable) as exc:
        pytest.skip(f"realbench inputs unavailable: {exc}")
    network = {"model": "synth_small3d"}
    scorer = realbench.load_scorer("fp32", network)
    settings = Settings(seed=0, per_kind=1, kinds=("paste", "side"), max_tries=3, segments=2,
                        min_alone=0.0, min_p=0.0)
    summary = realbench.generate(tmp_path, scorer, videos, settings, lambda _: None, network)
    assert summary["network"] == network and summary["model"] == "synth_small3d"
    assert summary["settings"]["crop"] == SIDE == 256
    assert summary["weights_sha256"] == scorer.weights_sha256
    size = scorer.spec.input_size
    for seg in summary["segments"]:
        clip = decode_clip(str(videos[seg["source"]]), seg["start"], FRAMES, size, 1.0)
        with torch.inference_mode():
            probs = scorer.probs(scorer.to_input(clip.frames).unsqueeze(0))[0].float()
        assert scorer.class_names[int(probs.argmax())] == seg["label"]
        assert float(probs.max()) == pytest.approx(seg["p_alone"], abs=1e-4)
    records = [json.loads(x) for x in (tmp_path / "evidence.jsonl").read_text().splitlines()]
    assert len(records) == summary["tried"] == 6 and summary["kept"] == 0
    for r in records:
        by_hand = ((r["side"] / SIDE) ** 2 if r["kind"] == "paste" else r["width"] / SIDE)
        assert r["truth_share"] == pytest.approx(by_hand, abs=0.02), r
        if r["kind"] == "paste":
            assert 0 <= r["x0"] and r["x0"] + r["side"] <= SIDE and r["side"] > 0.6 * 224
        assert r["reasons"] and r["p_blank_truth"] is not None
    tiny = realbench.load_scorer("fp32", {"model": "tiny"})
    with pytest.raises(ValueError, match="realbench composites are 16 frames; tiny takes 8"):
        realbench.generate(tmp_path / "tiny", tiny, videos, settings, lambda _: None)
    # A user's factory without class names: its labels are class indices as text, which the
    # pipeline reads back as indices.
    own = {"model": "tests.user_models:small_net", "size": 32, "num_frames": 16}
    summary = realbench.generate(tmp_path / "own", realbench.load_scorer("fp32", own), videos,
                                 replace(settings, kinds=("temporal",)), lambda _: None, own)
    assert summary["network"] == own and summary["tried"] == 3
    records = [json.loads(x) for x in (tmp_path / "own" / "evidence.jsonl").read_text()
               .splitlines()]
    assert all(r["label"] in ("0", "1", "2") for r in records)


def test_network_options_are_the_pipelines_own_declarations() -> None:
    """``--model``, ``--checkpoint``... are the pipeline's declared options (one declaration),
    with I3D as the benchmark's default network; what is given is what generate records."""
    from pipeline.config import declared_options

    args, _ = realbench.parse_args(["--out", "o"])
    assert args.model == realbench.MODEL and args.checkpoint is None
    args, _ = realbench.parse_args(["--out", "o", "--model", "pkg.nets:build", "--size", "112",
                                    "--num-frames", "16", "--mean", "0.4,0.4,0.4"])
    assert (args.model, args.size, args.num_frames, args.mean) == (
        "pkg.nets:build", 112, 16, (0.4, 0.4, 0.4))
    declared = declared_options()
    assert all(n in declared and declared[n].flag for n in realbench.NETWORK_OPTIONS)
    config = realbench.model_config({"model": "pkg.nets:build", "mean": [0.4, 0.4, 0.4]})
    assert config.model == "pkg.nets:build" and config.mean == (0.4, 0.4, 0.4)
    assert realbench.model_config(None).model == realbench.MODEL


def test_coverage_known_answers() -> None:
    """Share of the voxels above half the maximum, and the mean; nan share without a positive
    maximum (a constant zero map, an all-negative one)."""
    m = np.array([0.0, 0.2, 0.6, 1.0], np.float32).reshape(1, 2, 2)
    assert realbench.coverage(m) == pytest.approx((0.5, 0.45))
    assert realbench.coverage(np.full((2, 3, 3), 0.25)) == (1.0, 0.25)
    share, mean = realbench.coverage(-m)
    assert np.isnan(share) and mean == pytest.approx(-0.45)
    assert np.isnan(realbench.coverage(np.zeros((1, 2, 2)))[0])
