"""Random manifests through the listing stage (hypothesis): every row becomes a clip or a
dead-letter row with a reason; nothing raises, nothing is dropped. A file that cannot be read
as UTF-8 text at all is refused as a whole, in one line."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.io import check_manifest, list_clips
from transforms.records import ClipRef, ErrorRecord

NAMES = ["walk", "run", "jump"]
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
value = st.one_of(st.none(), st.integers(-5, 50), st.floats(allow_nan=True), text,
                  st.booleans(), st.lists(st.integers(-5, 50), max_size=5))
box = st.one_of(st.none(), st.lists(st.integers(-10, 80), min_size=0, max_size=5))
boxes = st.one_of(value, st.lists(box, max_size=6), st.just("[[1, 2, 3, 4], null]"),
                  st.just("not json"))
row = st.fixed_dictionaries(
    {"video": st.one_of(st.just("clip.avi"), st.just("dir/clip2.mp4"), st.just(""),
                        st.none(), text)},
    optional={"label": st.one_of(value, st.sampled_from(NAMES)),
              "start_frame": st.one_of(value, st.integers(0, 30).map(str)),
              "boxes": boxes, "frame_range": st.one_of(value, st.just("[2, 6]"),
                                                       st.lists(st.integers(-3, 20),
                                                                max_size=3)),
              "extra": value})


def _csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["video"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\r\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    return buf.getvalue()


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=6), kind=st.sampled_from(["csv", "jsonl"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]),
       junk_line=st.booleans())
def test_every_manifest_row_becomes_a_clip_or_a_dead_letter(rows, kind, encoding, junk_line):
    body = _csv(rows) if kind == "csv" else _jsonl(rows)
    if junk_line and kind == "jsonl":
        body += "{not json\n"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"m.{kind}"
        try:
            data = body.encode(encoding)
        except UnicodeEncodeError:
            data = body.encode("utf-8")
            encoding = "utf-8"
        path.write_bytes(data)
        try:
            items = list(list_clips(str(path), 8, 1, NAMES))
        except ValueError as exc:  # only a file that is not UTF-8 is refused as a whole
            assert "is not UTF-8 text" in str(exc) and encoding == "latin-1", exc
            assert len(str(exc).splitlines()) == 1
            return
        expected = len(rows) + (junk_line and kind == "jsonl")
        assert len(items) == expected, (items, rows)  # nothing dropped, nothing invented
        for item in items:
            assert isinstance(item, ClipRef | ErrorRecord)
            if isinstance(item, ErrorRecord):
                assert item.stage == "list" and item.message and item.error_type
            else:
                assert item.video and item.start_frame >= 0
                assert item.label is None or (type(item.label) is int
                                              and 0 <= item.label < len(NAMES)), item.label
        # The up-front check either accepts the file or refuses it in one line.
        try:
            check_manifest(str(path))
        except ValueError as exc:
            assert len(str(exc).splitlines()) == 1
