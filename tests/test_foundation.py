"""Foundation v2 end to end: strict options, a user's own network, checkpoints through
FileSystems, weights identity in the config hash, all-or-nothing clips, the failure threshold,
the progress line."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from apache_beam.io.filesystem import FileMetadata, FileSystem, MatchResult

import run_pipeline
from pipeline import job
from pipeline.outputs import iter_tables
from transforms.flow import FlowFn
from transforms.methods.base import METHODS
from transforms.records import clip_ref
from transforms.tubes import TubesFn

SMALL = ["--model", "tiny", "--size", "24", "--num-frames", "8", "--stride", "6",
         "--topk", "2", "--batch-size", "5", "--metric-steps", "4", "--device", "cpu"]


def rows(path: Path) -> list[dict]:
    """Every committed row under ``path`` (Hive partition values as columns)."""
    return [r for _, t in iter_tables(str(path)) for r in t.to_pylist()]


# --- Strict options -------------------------------------------------------------------------


def test_a_misspelled_flag_stops_the_run_naming_it(tmp_path, video_dir, capsys):
    code = run_pipeline.main(["--input", str(video_dir), "--output", str(tmp_path / "o"),
                              *SMALL, "--strdie", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--strdie" in err[0] and "--stride" in err[0], err
    assert not (tmp_path / "o").exists()


def test_beam_options_still_pass_through(tmp_path, video_dir):
    info = job.run(["--input", str(video_dir), "--output", str(tmp_path / "o"), *SMALL,
                    "--no-metrics", "--direct_running_mode=in_memory", "--no-progress"])
    assert info["counts"]["clips_written"] == 3


# --- A user's own network -------------------------------------------------------------------


def test_user_factory_end_to_end(tmp_path, video_dir):
    names = tmp_path / "classes.txt"
    names.write_text("walk\nrun\njump\n")
    out = tmp_path / "o"
    info = job.run(["--input", str(video_dir), "--output", str(out),
                    "--model", "tests.user_models:small_net", "--num-frames", "8",
                    "--size", "24", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
                    "--class-names", str(names), "--stride", "6", "--topk", "2",
                    "--metric-steps", "4", "--device", "cpu", "--methods", "aosa_sgl",
                    "--target", "jump"])
    assert info["counts"] == {"clips_in": 3, "clips_written": 3, "clips_failed": 0,
                             "clips_skipped": 0}
    met = rows(out / "metrics")
    assert {r["target_class"] for r in met} == {2}
    assert {r["predicted_name"] for r in met} <= {"walk", "run", "jump"}
    assert all(len(r["top5"]) == 3 for r in met)  # a 3-class network
    assert {r["weights_sha256"] for r in met} == {"random-seed-0"}
    assert all(r["forward_passes"] == 16 + 1 for r in met)


def test_user_factory_needs_its_input_shape(tmp_path, video_dir, capsys):
    code = run_pipeline.main(["--input", str(video_dir), "--output", str(tmp_path / "o"),
                              "--model", "tests.user_models:small_net"])
    err = capsys.readouterr().err
    assert code == 2 and "--num-frames and --size" in err


# --- Checkpoints through FileSystems, identity by content -------------------------------------


class MemFileSystem(FileSystem):
    """A FileSystems scheme (``memtest://``) holding files in a dict: a stand-in for gs:// or
    s3:// that the model handler must read through Beam, not ``open()``."""

    FILES: dict[str, bytes] = {}

    @classmethod
    def scheme(cls):
        return "memtest"

    def exists(self, path):
        return path in self.FILES

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        return io.BytesIO(self.FILES[path])

    def match(self, patterns, limits=None):
        return [MatchResult(p, [FileMetadata(k, len(v)) for k, v in self.FILES.items()
                                if k == p]) for p in patterns]

    def join(self, base, *parts):
        return "/".join([base.rstrip("/"), *parts])

    # Not needed here.
    def split(self, path): raise NotImplementedError  # noqa: E704
    def mkdirs(self, path): raise NotImplementedError  # noqa: E704
    def has_dirs(self): return False  # noqa: E704
    def create(self, *a, **k): raise NotImplementedError  # noqa: E704
    def copy(self, *a): raise NotImplementedError  # noqa: E704
    def rename(self, *a): raise NotImplementedError  # noqa: E704
    def size(self, path): return len(self.FILES[path])  # noqa: E704
    def last_updated(self, path): return 0.0  # noqa: E704
    def checksum(self, path): return hashlib.md5(self.FILES[path]).hexdigest()  # noqa: E704
    def metadata(self, path): return FileMetadata(path, len(self.FILES[path]))  # noqa: E704
    def delete(self, paths): raise NotImplementedError  # noqa: E704
    def _list(self, dir_or_prefix): raise NotImplementedError  # noqa: E704


def tiny_checkpoint(seed: int) -> bytes:
    from models.tiny import TinyVideoNet

    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(TinyVideoNet(4).state_dict(), buf)
    return buf.getvalue()


def test_checkpoint_through_a_filesystems_uri_and_its_sha_in_hash_and_rows(tmp_path,
                                                                            video_dir):
    uri = "memtest://models/tiny.pt"
    a, b = tiny_checkpoint(1), tiny_checkpoint(2)
    assert len(a) == len(b) and a != b  # a retrained checkpoint: same name, same size
    args = ["--input", str(video_dir), *SMALL, "--checkpoint", uri, "--no-metrics"]
    MemFileSystem.FILES = {uri: a}
    first = job.run([*args, "--output", str(tmp_path / "a")])
    MemFileSystem.FILES = {uri: b}
    second = job.run([*args, "--output", str(tmp_path / "b")])
    assert first["weights_sha256"] == hashlib.sha256(a).hexdigest()
    assert second["weights_sha256"] == hashlib.sha256(b).hexdigest()
    assert first["config_hash"] != second["config_hash"]
    assert first["config_hashes"]["aosa"] != second["config_hashes"]["aosa"]
    sal = rows(tmp_path / "a" / "saliency")
    assert {r["weights_sha256"] for r in sal} == {hashlib.sha256(a).hexdigest()}
    assert {r["config_hash"] for r in sal} == {first["config_hashes"]["aosa"]}
    # The maps differ too: the weights were really loaded from the URI.
    other = {r["clip_id"]: r["saliency"] for r in rows(tmp_path / "b" / "saliency")}
    assert any(r["saliency"] != other[r["clip_id"]] for r in sal)


def test_missing_or_unfit_checkpoint_is_one_line(tmp_path, video_dir, capsys):
    MemFileSystem.FILES = {"memtest://bad.pt": torch.save.__doc__.encode()}
    for ckpt, message in (("memtest://nope.pt", "does not exist"),
                          ("memtest://bad.pt", "is neither a torch checkpoint")):
        code = run_pipeline.main(["--input", str(video_dir), "--output", str(tmp_path / "o"),
                                  *SMALL, "--checkpoint", ckpt])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err


# --- All-or-nothing clips and the failure threshold -----------------------------------------


def _fail_for(name_part: str, real):
    def apply(self, item):
        if name_part in clip_ref(item).video:
            raise ValueError(f"injected failure in {self.stage}")
        yield from real(self, item)

    return apply


class FailsOnThirdClip:
    """A test method run second: raises on the static clip (good_2, translating by (0, 0)),
    after AOSA already succeeded on it."""

    name = "fails_on_static_clip"
    needs_tubes = False
    uses_network = True

    def __init__(self, options=None):
        pass

    def explain(self, engine, tubes):
        from transforms.methods.base import Explanation

        frames = engine.x
        if bool((frames[:, 0] == frames[:, -1]).all()):  # a static clip
            raise ValueError("injected failure in a method")
        return Explanation(torch.zeros(engine.frame_shape))


def test_injected_failures_become_error_rows_and_no_partial_rows(tmp_path, video_dir,
                                                                  monkeypatch):
    monkeypatch.setattr(FlowFn, "apply", _fail_for("good_0", FlowFn.apply))
    monkeypatch.setattr(TubesFn, "apply", _fail_for("good_1", TubesFn.apply))
    monkeypatch.setitem(METHODS, FailsOnThirdClip.name, FailsOnThirdClip)
    extra = video_dir / "good_3.avi"
    (video_dir / "good_1.avi").rename(video_dir / "moving_good_1.avi")
    from tests.conftest import write_video
    from tests.test_tubes import translating_clip

    write_video(extra, translating_clip(1, 1, frames=12, size=48, seed=5)[:, 4:44])
    out = tmp_path / "o"
    info = job.run(["--input", str(video_dir), "--output", str(out), *SMALL,
                    "--methods", f"aosa,{FailsOnThirdClip.name}", "--max-failed-fraction", "1"])
    assert info["counts"] == {"clips_in": 4, "clips_written": 1, "clips_failed": 3,
                             "clips_skipped": 0}
    errors = {Path(r["video"]).name: r for r in rows(out / "errors")}
    assert errors["good_0.avi"]["stage"] == "flow"
    assert errors["moving_good_1.avi"]["stage"] == "tubes"
    assert errors["good_2.avi"]["stage"] == "explain"  # the static clip: AOSA had succeeded
    assert "injected failure" in errors["good_2.avi"]["message"]
    for table in ("saliency", "metrics"):
        written = rows(out / table)
        assert {Path(r["video"]).name for r in written} == {"good_3.avi"}
        assert sorted(r["method"] for r in written) == sorted(["aosa", FailsOnThirdClip.name])


def test_failure_threshold_fails_the_run_after_writing(tmp_path, video_dir, bad_inputs,
                                                       capsys):
    for name in ("zero", "text", "truncated", "short"):
        bad_inputs[name].rename(video_dir / bad_inputs[name].name)
    out = tmp_path / "o"
    code = run_pipeline.main(["--input", str(video_dir), "--output", str(out), *SMALL,
                              "--max-failed-fraction", "0.5"])
    captured = capsys.readouterr()
    assert code == 1
    assert "4 of 7 clips were dead-lettered" in captured.err and "0.5" in captured.err
    run = json.loads((out / "run.json").read_text())
    assert run["counts"] == {"clips_in": 7, "clips_written": 3, "clips_failed": 4,
                             "clips_skipped": 0}
    assert len(rows(out / "saliency")) == 3  # what it had is written
    info = job.run(["--input", str(video_dir), "--output", str(tmp_path / "p"), *SMALL,
                    "--max-failed-fraction", "0.6"])
    assert info["counts"]["clips_failed"] == 4


# --- Progress -------------------------------------------------------------------------------


def test_local_runs_print_a_progress_line(tmp_path, video_dir, capsys):
    job.run(["--input", str(video_dir), "--output", str(tmp_path / "o"), *SMALL])
    err = capsys.readouterr().err
    assert "3/3 clips" in err and "s/clip" in err, err
    job.run(["--input", str(video_dir), "--output", str(tmp_path / "q"), *SMALL,
             "--no-progress"])
    assert "clips" not in capsys.readouterr().err


# --- Every method in one run, with the designed costs ---------------------------------------


def test_every_method_in_one_run_with_the_designed_pass_counts(tmp_path, video_dir):
    from transforms.methods.base import available_methods
    from transforms.methods.osa import osa_geometry, window_boxes

    methods = available_methods()
    assert set(methods) == {"aosa", "aosa_sgl", "aosa_approx", "aosa_sgl_approx", "aosa_t",
                            "aosa_t_sgl", "osa", "gradcam", "gradcam_frame", "ep", "step",
                            "fep", "random", "center"}
    out = tmp_path / "o"
    info = job.run(["--input", str(video_dir), "--output", str(out), *SMALL,
                    "--methods", ",".join(methods), "--ep-iterations", "5",
                    "--ep-areas", "0.1,0.2"])
    assert info["counts"] == {"clips_in": 3, "clips_written": 3, "clips_failed": 0,
                             "clips_skipped": 0}
    met = rows(out / "metrics")
    assert len(met) == 3 * 14 and len(rows(out / "saliency")) == 3 * 14
    n_windows = len(window_boxes((8, 24, 24), *osa_geometry((8, 24, 24)), "truncate", "cpu"))
    for r in met:
        fwd, bwd, m = r["forward_passes"], r["backward_passes"], r["method"]
        if m in ("aosa", "aosa_sgl"):
            assert (fwd, bwd) == (16 + 1, 0)  # N masks + the shared clean forward
        elif m in ("aosa_t", "aosa_t_sgl"):
            assert (fwd, bwd) == (2 * 16 + 1, 0)  # two half-clip windows
        elif m in ("ep", "step", "fep"):
            assert (fwd, bwd) == (5 * 2 + 1, 5 * 2)  # iterations × areas, one batch
        elif m.endswith("_approx"):
            # no forward per mask: the clean one, the layer's activations of the clip and
            # of the fill, then a forward and a backward per gradient (the expansion's default)
            assert 1 <= bwd <= 3 and fwd == 3 + bwd
        elif m == "osa":
            assert (fwd, bwd) == (n_windows + 1, 0)
        elif m.startswith("gradcam"):
            assert (fwd, bwd) == (2, 1)
        else:
            assert (fwd, bwd) == (0, 0)
        assert r["metric_forward_passes"] == 8


def test_a_frame_range_in_the_manifest_gives_temporal_metrics(tmp_path, video_dir):
    from tests.conftest import write_manifest
    from transforms.temporal import above_median_share, temporal_pointing

    good = sorted(video_dir.glob("*.avi"))
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"video": str(good[0]), "frame_range": [2, 6]},
        {"video": str(good[1])},
        {"video": str(good[2]), "frame_range": [5, 3]},  # malformed: dead-lettered
    ])
    out = tmp_path / "o"
    info = job.run(["--input", str(manifest), "--output", str(out), *SMALL,
                    "--max-failed-fraction", "1",
                    "--methods", "aosa"])
    assert info["counts"] == {"clips_in": 3, "clips_written": 2, "clips_failed": 1,
                             "clips_skipped": 0}
    assert "frame_range" in rows(out / "errors")[0]["message"]
    met = {Path(r["video"]).name: r for r in rows(out / "metrics")}
    sal = {Path(r["video"]).name: r for r in rows(out / "saliency")}
    with_range, without = met[good[0].name], met[good[1].name]
    assert with_range["frame_range"] == [2, 6]  # clip frames (start 0, stride 1)
    m = np.asarray(sal[good[0].name]["saliency"], np.float32).reshape(8, 24, 24)
    assert with_range["tpt_hit"] == temporal_pointing(m, (2, 6))
    assert with_range["t_above_median_share"] == pytest.approx(
        above_median_share(m, (2, 6)), abs=1e-3)  # the stored map is float16
    assert without["frame_range"] is None and without["tpt_hit"] is None
    assert without["t_mass_in_range"] is None
