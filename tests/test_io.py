"""The clip list: directories, globs, CSV and JSONL manifests, stable ids."""

from __future__ import annotations

import json

import pytest

from transforms.io import list_clips
from transforms.records import ClipRef, ErrorRecord, make_clip_id


def test_directory_and_glob(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.mp4", "b.AVI", "notes.txt", "c.webm"):
        (tmp_path / name).write_bytes(b"?")
    refs = list(list_clips(str(tmp_path), 16))
    assert [r.video for r in refs] == [str(tmp_path / n) for n in ("a/x.mp4", "b.AVI", "c.webm")]
    assert all(isinstance(r, ClipRef) and r.start_frame == 0 for r in refs)
    globbed = list(list_clips(str(tmp_path / "*.webm"), 16))
    assert [r.video for r in globbed] == [str(tmp_path / "c.webm")]
    with pytest.raises(ValueError, match="names no video files"):
        list(list_clips(str(tmp_path / "*.mkv"), 16))


def test_clip_id_is_stable_and_depends_on_the_sampling():
    a = make_clip_id("gs://b/v.mp4", 0, 16)
    assert a == make_clip_id("gs://b/v.mp4", 0, 16) and len(a) == 16
    assert len({a, make_clip_id("gs://b/v.mp4", 8, 16), make_clip_id("gs://b/v.mp4", 0, 32),
                make_clip_id("gs://b/v.mp4", 0, 16, 2)}) == 4


def test_csv_manifest_with_names_boxes_and_bad_rows(tmp_path):
    boxes = json.dumps([[1, 2, 3, 4], None])
    (tmp_path / "m.csv").write_text(
        "video,label,start_frame,boxes\n"
        f"v1.mp4,1,3,\"{boxes.replace(chr(34), chr(34) * 2)}\"\n"
        "v2.mp4,move_up,,\n"
        "v3.mp4,jumping,,\n"
        "v4.mp4,2,-1,\n")
    items = list(list_clips(str(tmp_path / "m.csv"), 16,
                            class_names=["move_right", "move_left", "move_up"]))
    ok = [i for i in items if isinstance(i, ClipRef)]
    bad = [i for i in items if isinstance(i, ErrorRecord)]
    assert ok[0].video == str(tmp_path / "v1.mp4") and ok[0].start_frame == 3
    assert ok[0].label == 1 and ok[0].boxes == ((1.0, 2.0, 3.0, 4.0), None)
    assert ok[1].label == 2 and ok[1].boxes is None and ok[1].start_frame == 0
    assert len(bad) == 2 and all(b.stage == "list" for b in bad)
    assert "jumping" in bad[0].message and "m.csv:4" in bad[0].video
    assert "start_frame must be >= 0" in bad[1].message


def test_missing_manifest_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        list(list_clips(str(tmp_path / "none.jsonl"), 16))


def test_a_clip_listed_twice_is_explained_once_and_the_repeat_is_reported(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"video": "v.mp4"}\n{"video": "v.mp4", "label": 1}\n'
                                      '{"video": "v.mp4", "start_frame": 4}\n')
    items = list(list_clips(str(tmp_path / "m.jsonl"), 16))
    assert [type(i).__name__ for i in items] == ["ClipRef", "ErrorRecord", "ClipRef"]
    assert items[1].error_type == "DuplicateClip" and "more than once" in items[1].message
    assert items[1].clip_id != items[0].clip_id  # error rows never collide with saliency rows
