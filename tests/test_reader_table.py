"""The ``table`` reader (custom CSV / JSON-lines data), its box rule and the documented example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipnet_lit.datasets.geometry import CropBox, crop_and_resize
from pipnet_lit.datasets.meta import load_dataset_meta, load_landmark_scheme
from pipnet_lit.datasets.readers import get_reader, read_records
from pipnet_lit.datasets.readers.table import TableBox, read_table
from pipnet_lit.datasets.records import BadInput, DataFormatError, MissingDownloadError
from pipnet_lit.synthetic.raw.table import (
    DATASET_YAML,
    SCHEME_YAML,
    write_table_example,
    write_table_tree,
)

REPO = Path(__file__).resolve().parents[1]
INPUT_SIZE = 32


# ---------------------------------------------------------------------------------------------------------
# Helpers: tiny images, tables written by hand, and an independent loop version of the official arithmetic.


def write_image(path: Path, width: int = 96, height: int = 80, gray: bool = False, seed: int = 0) -> Path:
    """A random image whose every column differs (so a crop shifted by one pixel is detected)."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if gray else (height, width, 3)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def official_table_crop(
    image: np.ndarray, points: list[list[float]] | None, box: list[float] | None, scale: float
) -> tuple[tuple[float, float, float, float], np.ndarray, list[list[float]] | None]:
    """The table rule written out like the official WFLW preprocessing: loops, plain floats, no helpers."""
    image_height, image_width = image.shape[:2]
    if box is not None:
        xmin, ymin, xmax, ymax = box
    else:
        xmin = min(p[0] for p in points)
        xmax = max(p[0] for p in points)
        ymin = min(p[1] for p in points)
        ymax = max(p[1] for p in points)
    width = xmax - xmin
    height = ymax - ymin
    xmin -= width * (scale - 1) / 2
    ymin -= height * (scale - 1) / 2
    xmax += width * (scale - 1) / 2
    ymax += height * (scale - 1) / 2
    xmin = max(xmin, 0)
    ymin = max(ymin, 0)
    xmax = min(xmax, image_width - 1)
    ymax = min(ymax, image_height - 1)
    width = xmax - xmin
    height = ymax - ymin
    crop = image[int(ymin) : int(ymax), int(xmin) : int(xmax), :]
    crop = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE))
    normalized = None
    if points is not None:
        normalized = [[(x - xmin) / width, (y - ymin) / height] for x, y in points]
    return (xmin, ymin, xmax, ymax), crop, normalized


CSV_TEXT = """\
image,x0,y0,x1,y1,x2,y2,box_x0,box_y0,box_x1,box_y1,split,pose,score,note
faces/a.png,12.25,20.5,40.75,22.0,26.0,50.5,,,,,train,1,0.5,hello
faces/a.png,50.0,30.0,70.0,31.5,60.0,55.0,45.0,25.0,75.0,60.0,test,0,1e-3,
faces/gray.png,-4.0,10.0,30.0,12.0,14.5,95.0,-5,-3,90,200,train,2,007,
faces/b.png,,,,,,,10,10,30,30,unlabeled,,,
"""

JSONL_LINES = [
    {"image": "faces/a.png", "landmarks": [[12.25, 20.5], [40.75, 22.0], [26.0, 50.5]], "split": "train",
     "pose": 1, "score": 0.5, "note": "hello"},
    {"image": "faces/a.png", "landmarks": [[50.0, 30.0], [70.0, 31.5], [60.0, 55.0]], "box": [45, 25, 75, 60],
     "split": "test", "pose": 0, "score": "1e-3", "note": None},
    {"image": "faces/gray.png", "landmarks": [[-4.0, 10.0], [30.0, 12.0], [14.5, 95.0]],
     "box": [-5, -3, 90, 200], "split": "train", "pose": 2, "score": "007", "note": None},
    {"image": "faces/b.png", "landmarks": None, "box": [10, 10, 30, 30], "split": "unlabeled", "pose": None,
     "score": None, "note": None},
]  # fmt: skip


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "mine"
    write_image(root / "faces/a.png", seed=1)
    write_image(root / "faces/gray.png", gray=True, seed=2)
    write_image(root / "faces/b.png", width=64, height=64, seed=3)
    write_text(root / "faces.csv", CSV_TEXT)
    write_text(root / "faces.jsonl", "".join(json.dumps(line) + "\n" for line in JSONL_LINES))
    return root


def bad_messages(root: Path, file: str, text: str, **spec) -> tuple[list[str], list]:
    """Read ``text`` written to ``file`` in skip mode: (skipped messages, records)."""
    write_text(root / file, text)
    bad = BadInput("skip")
    records = read_table(root, file=file, bad=bad, **spec)
    return bad.skipped, records


# ---------------------------------------------------------------------------------------------------------
# Parsing.


def test_csv_rows_become_records_with_raw_points_boxes_names_and_attributes(data_root: Path) -> None:
    records = read_table(data_root, file="faces.csv", bad=BadInput("raise"))
    assert [r.name for r in records] == ["faces_a_1", "faces_a_2", "faces_gray", "faces_b"]
    np.testing.assert_array_equal(records[0].points, [[12.25, 20.5], [40.75, 22.0], [26.0, 50.5]])
    np.testing.assert_array_equal(records[2].points, [[-4.0, 10.0], [30.0, 12.0], [14.5, 95.0]])
    assert records[0].points.dtype == np.float64 and records[0].points.shape == (3, 2)
    assert records[3].points is None
    assert records[0].box is None
    assert records[1].box == (45.0, 25.0, 75.0, 60.0)
    assert records[2].box == (-5.0, -3.0, 90.0, 200.0)
    assert records[0].attributes == {"split": "train", "pose": 1, "score": 0.5, "note": "hello"}
    # numbers only when written plainly: 1e-3 and 007 stay text (str() of the value gives the cell back)
    assert records[1].attributes == {"split": "test", "pose": 0, "score": "1e-3", "note": None}
    assert records[2].attributes == {"split": "train", "pose": 2, "score": "007", "note": None}
    assert records[3].attributes == {"split": "unlabeled", "pose": None, "score": None, "note": None}
    assert isinstance(records[0].attributes["pose"], int)
    assert [r.source for r in records] == [f"{data_root / 'faces.csv'}:{n}" for n in (2, 3, 4, 5)]
    assert records[0].image.path == data_root / "faces/a.png"
    assert records[0].image.identity().startswith("faces/a.png:")
    assert records[0].rule == TableBox(1.1, "auto")


def test_jsonl_gives_the_same_records_as_csv(data_root: Path) -> None:
    from_csv = read_table(data_root, file="faces.csv", bad=BadInput("raise"))
    from_json = read_table(data_root, file="faces.jsonl", bad=BadInput("raise"))
    assert [r.name for r in from_json] == [r.name for r in from_csv]
    for a, b in zip(from_csv, from_json, strict=True):
        assert a.box == b.box
        assert a.attributes == b.attributes
        assert (a.points is None) == (b.points is None)
        if a.points is not None:
            np.testing.assert_array_equal(a.points, b.points)
    assert [r.source.rsplit(":", 1)[1] for r in from_json] == ["1", "2", "3", "4"]


def test_jsonl_names_empty_landmarks_and_nested_attributes(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_image(root / "x.jpg")
    lines = [
        {"image": "x.jpg", "landmarks": [], "box": [1, 2, 30, 40], "name": "first", "tags": ["a", 1]},
        {"image": "x.jpg", "box": [5, 6, 50, 60], "meta": {"k": 2}, "flag": True},
    ]
    write_text(root / "t.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    records = read_table(root, file="t.jsonl", bad=BadInput("raise"))
    assert [r.name for r in records] == ["first", "x"]
    assert records[0].points is None and records[1].points is None
    assert records[0].attributes == {"tags": '["a", 1]'}
    assert records[1].attributes == {"meta": '{"k": 2}', "flag": True}


def test_the_registry_maps_the_table_format_to_this_reader(data_root: Path) -> None:
    assert get_reader("table") is read_table
    records = read_records("table", data_root, file="faces.csv", scale=1.3, box_from="auto")
    assert len(records) == 4 and records[0].rule == TableBox(1.3, "auto")


def test_where_selects_rows_and_keeps_the_whole_file_names(data_root: Path) -> None:
    def names(**spec) -> list[str]:
        return [r.name for r in read_table(data_root, file="faces.csv", bad=BadInput("raise"), **spec)]

    assert names(where={"split": "train"}) == ["faces_a_1", "faces_gray"]
    assert names(where={"split": ["test", "unlabeled"]}) == ["faces_a_2", "faces_b"]
    assert names(where={"split": "train", "pose": 2}) == ["faces_gray"]
    assert names(where={"pose": "1"}) == ["faces_a_1"]  # compared as text, like the test subsets
    assert names(where={"score": "007"}) == ["faces_gray"]
    assert names(where={"split": "nothing"}) == []
    with pytest.raises(ValueError, match=r"no row has the attribute\(s\) \['kind'\]"):
        names(where={"kind": "x"})


def test_where_skips_bad_rows_outside_the_selection(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_image(root / "a.png", width=40, height=40)
    text = "image,x0,y0,x1,y1,split\na.png,1,2,20,30,train\na.png,1,oops,20,30,test\na.png,1,2\n"
    write_text(root / "t.csv", text)
    bad = BadInput("skip")
    records = read_table(root, file="t.csv", where={"split": "train"}, bad=bad)
    assert [r.name for r in records] == ["a_1"]
    # line 3 belongs to the test split; line 4 cannot be split into fields, so no split can claim it
    assert len(bad.skipped) == 1 and bad.skipped[0].startswith(f"{root / 't.csv'}:4: ")
    bad = BadInput("skip")
    assert read_table(root, file="t.csv", where={"split": "test"}, bad=bad) == []
    assert [m.split(": ")[0].rsplit(":", 1)[1] for m in bad.skipped] == ["3", "4"]


# ---------------------------------------------------------------------------------------------------------
# Names.


def test_names_from_paths_several_faces_explicit_names_and_absolute_paths(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for rel in ("one.png", "sub/dir/two.png", "sub/dir/three.png", "group.jpg", "pic.v2.png"):
        write_image(root / rel, width=40, height=40)
    outside = write_image(tmp_path / "elsewhere/four.png", width=40, height=40)
    text = (
        "name,image,x0,y0,x1,y1\n"
        ",one.png,1,2,20,30\n"
        ",sub/dir/two.png,1,2,20,30\n"
        ",group.jpg,1,2,20,30\n"
        f",{root / 'sub/dir/three.png'},1,2,20,30\n"
        ",group.jpg,3,4,22,33\n"
        "my_face,group.jpg,5,6,25,35\n"
        f",{outside},1,2,20,30\n"
        ",./pic.v2.png,1,2,20,30\n"
    )
    write_text(root / "t.csv", text)
    names = [r.name for r in read_table(root, file="t.csv", bad=BadInput("raise"))]
    rest = ["sub_dir_two", "group_1", "sub_dir_three", "group_2", "my_face"]
    assert names == ["one", *rest, outside.with_suffix("").as_posix().lstrip("/").replace("/", "_"), "pic.v2"]


def test_duplicate_or_slashed_names_are_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_image(root / "a.png", width=40, height=40)
    text = "image,name,x0,y0,x1,y1\na.png,,1,2,20,30\na.png,a,3,4,22,33\na.png,p/q,1,2,20,30\n"
    skipped, records = bad_messages(root, "t.csv", text)
    assert [r.name for r in records] == ["a"]
    assert len(skipped) == 2
    assert skipped[0].startswith(f"{root / 't.csv'}:3: ") and "already used by line 2" in skipped[0]
    assert skipped[1].startswith(f"{root / 't.csv'}:4: ") and "slash" in skipped[1]


# ---------------------------------------------------------------------------------------------------------
# Malformed input: every message names file:line and says what to do.


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("a.png,1,2,3", "4 fields but the header has 5 columns"),
        ("a.png,1,2,3,4,5", "6 fields but the header has 5 columns"),
        ("a.png,1,abc,3,4", "landmark value y0 is 'abc', not a finite number"),
        ("a.png,1,2,nan,4", "landmark value x1 is 'nan', not a finite number"),
        (",1,2,3,4", "the 'image' value is empty"),
        ("a.png,1,,3,4", "1 of the 4 landmark values are empty"),
        ("a.png,,,,", "neither landmarks nor a box"),
        ("a.png,5,2,5,9", "landmarks' box (5.0, 2.0, 5.0, 9.0) is empty"),
        ("missing.png,1,2,3,4", "image not found"),
    ],
)
def test_bad_csv_rows_name_file_and_line(tmp_path: Path, row: str, expected: str) -> None:
    root = tmp_path / "d"
    write_image(root / "a.png", width=40, height=40)
    text = f"image,x0,y0,x1,y1\na.png,1,2,20,30\n\n{row}\na.png,3,4,22,33\n"
    skipped, records = bad_messages(root, "t.csv", text)
    # a malformed a.png row still counts as that image's second face, so the other names do not move
    assert [r.name for r in records] == (["a_1", "a_3"] if row.startswith("a.png") else ["a_1", "a_2"])
    assert len(skipped) == 1
    assert skipped[0].startswith(f"{root / 't.csv'}:4: ")
    assert expected in skipped[0]
    with pytest.raises(DataFormatError, match=re.escape("t.csv:4: ")):
        read_table(root, file="t.csv", bad=BadInput("raise"))


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("a.png,1,2,3,4,0,0,0", "the row has 8 fields"),
        ("a.png,1,2,3,4,0,0,x,9", "box value box_x1 is 'x'"),
        ("a.png,1,2,3,4,10,10,5,20", "box (10.0, 10.0, 5.0, 20.0) is empty"),
        ("a.png,,,,,1,2,,", "box value box_x1 is ''"),
    ],
)
def test_bad_boxes_name_file_and_line(tmp_path: Path, row: str, expected: str) -> None:
    root = tmp_path / "d"
    write_image(root / "a.png", width=40, height=40)
    text = f"image,x0,y0,x1,y1,box_x0,box_y0,box_x1,box_y1\n{row}\n"
    skipped, records = bad_messages(root, "t.csv", text)
    assert records == [] and len(skipped) == 1
    assert skipped[0].startswith(f"{root / 't.csv'}:2: ") and expected in skipped[0]


def test_csv_header_errors_raise_with_the_file(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    cases = {
        "x0,y0,x1,y1\n1,2,3,4\n": "no 'image' column",
        "image,x0,y0,x2,y2\na.png,1,2,3,4\n": "no gaps",
        "image,x0,y0,x1\na.png,1,2,3\n": "no gaps",
        "image,x0,y0,box_x0,box_y0\na.png,1,2,3,4\n": "the box needs all of",
        "image,note\na.png,1\n": "neither landmark columns",
        "image,x0,y0,x0\na.png,1,2,3\n": "duplicate column",
        "": "the file is empty",
    }
    for text, expected in cases.items():
        write_text(root / "t.csv", text)
        with pytest.raises(DataFormatError, match=re.escape(expected)) as info:
            read_table(root, file="t.csv", bad=BadInput("skip"))
        assert str(root / "t.csv") in str(info.value)
    write_text(root / "t.csv", "image,x0,y0\na.png,1,2\n")
    with pytest.raises(DataFormatError, match="box_from is 'box' but the header has no"):
        read_table(root, file="t.csv", box_from="box", bad=BadInput("skip"))


def test_jsonl_landmark_count_must_match_the_first_labeled_row(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_image(root / "a.png", width=40, height=40)
    lines = [
        '{"image": "a.png", "box": [1, 1, 30, 30]}',
        '{"image": "a.png", "landmarks": [[1, 2], [20, 30], [5, 25]]}',
        '{"image": "a.png", "landmarks": [[1, 2], [20, 30]]}',
        '{"image": "a.png", "landmarks": [[1, 2], [20, 30], [5, 25], [7, 7]]}',
        '{"image": "a.png", "landmarks": [[2, 3], [21, 31], [6, 26]]}',
    ]
    skipped, records = bad_messages(root, "t.jsonl", "\n".join(lines) + "\n")
    assert [len(r.points) if r.points is not None else 0 for r in records] == [0, 3, 3]
    path = root / "t.jsonl"
    what_to_do = "every row needs the same landmarks in the same order"
    assert skipped == [
        f"{path}:3: the row has 2 landmarks but line 2 has 3; {what_to_do}",
        f"{path}:4: the row has 4 landmarks but line 2 has 3; {what_to_do}",
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"image": "a.png", "landmarks": [[1, 2], [20, 30]', "not valid JSON"),
        ('["a.png", 1, 2]', "expected a JSON object, got list"),
        ('{"landmarks": [[1, 2], [20, 30]]}', "missing or empty 'image'"),
        ('{"image": "a.png", "landmarks": [[1, 2, 3], [20, 30]]}', "list of [x, y] pairs"),
        ('{"image": "a.png", "landmarks": [[1, "b"], [20, 30]]}', "landmark value y0 is 'b'"),
        ('{"image": "a.png", "landmarks": [[1, NaN], [20, 30]]}', "landmark value y0 is nan"),
        ('{"image": "a.png", "landmarks": [[1, 2], [true, 30]]}', "landmark value x1 is True"),
        ('{"image": "a.png", "landmarks": [[1, 2], [20, 30]], "box": [1, 2, 3]}', "'box' must be"),
        ('{"image": "a.png", "landmarks": [[1, 2], [20, 30]], "name": [1]}', "'name' must be a string"),
        ('{"image": "nope.png", "landmarks": [[1, 2], [20, 30]]}', "image not found"),
        ('{"image": "a.png"}', "neither landmarks nor a box"),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    root = tmp_path / "d"
    write_image(root / "a.png", width=40, height=40)
    text = '{"image": "a.png", "landmarks": [[1, 2], [20, 30]], "name": "ok"}\n' + line + "\n"
    skipped, records = bad_messages(root, "t.jsonl", text)
    assert [r.name for r in records] == ["ok"]
    assert len(skipped) == 1
    assert skipped[0].startswith(f"{root / 't.jsonl'}:2: ") and expected in skipped[0]


def test_box_from_needs_what_it_names(data_root: Path) -> None:
    skipped, records = bad_messages(data_root, "faces.csv", CSV_TEXT, box_from="box")
    assert [r.name for r in records] == ["faces_a_2", "faces_gray", "faces_b"]
    assert len(skipped) == 1 and skipped[0].startswith(f"{data_root / 'faces.csv'}:2: ")
    assert "box_from is 'box'" in skipped[0]
    skipped, records = bad_messages(data_root, "faces.csv", CSV_TEXT, box_from="landmarks")
    assert [r.name for r in records] == ["faces_a_1", "faces_a_2", "faces_gray"]
    assert len(skipped) == 1 and skipped[0].startswith(f"{data_root / 'faces.csv'}:5: ")


def test_missing_downloads_and_bad_arguments(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(MissingDownloadError, match=re.escape(str(tmp_path / "absent"))):
        read_table(tmp_path / "absent", file="faces.csv", bad=BadInput("raise"))
    with pytest.raises(MissingDownloadError, match=re.escape(str(data_root / "other.csv"))):
        read_table(data_root, file="other.csv", bad=BadInput("raise"))
    write_text(data_root / "faces.txt", "image x0 y0\n")
    with pytest.raises(DataFormatError, match=r"faces\.txt: the table format reads \.csv"):
        read_table(data_root, file="faces.txt", bad=BadInput("raise"))
    with pytest.raises(ValueError, match="box_from must be one of"):
        read_table(data_root, file="faces.csv", box_from="detector", bad=BadInput("raise"))
    with pytest.raises(ValueError, match="scale must be > 0"):
        read_table(data_root, file="faces.csv", scale=0, bad=BadInput("raise"))


# ---------------------------------------------------------------------------------------------------------
# The box rule against hand-computed numbers.


def test_given_box_enlargement_at_a_float_rounding_boundary() -> None:
    # (1.1 - 1) is 0.10000000000000009, so the margin of a 20-pixel box is 1.0000000000000009, not 1.0:
    # x0 = 5 - 1.0000000000000009 = 3.999999999999999 truncates to 3 (a rounded 0.05 would give 4);
    # x1 = 25 + 1.0000000000000009 rounds to 26.0.
    crop_box, normalized = TableBox(1.1, "box").apply(None, (5.0, 5.0, 25.0, 25.0), 96, 96)
    assert normalized is None
    assert crop_box == CropBox(3.999999999999999, 3.999999999999999, 26.0, 26.0)
    assert crop_box.slices() == (slice(3, 26), slice(3, 26))
    assert int(5.0 - 20.0 * 0.05) == 4  # the literal that would move the edge


def test_landmark_box_uses_float_min_max_and_is_not_truncated() -> None:
    points = np.array([[13.0, 20.5], [53.0, 22.0], [26.25, 50.5]])
    crop_box, normalized = TableBox(1.1, "auto").apply(points, None, 96, 80)
    # box (13, 20.5, 53, 50.5): w = 40, h = 30; margins 2.0000000000000018 and 1.5000000000000013
    assert crop_box.x0 == 10.999999999999998  # int() gives 10, a rounded 0.05 would give 11
    assert crop_box.y0 == 19.0
    assert crop_box.x1 == 55.0
    assert crop_box.y1 == 52.0
    assert crop_box.slices() == (slice(19, 52), slice(10, 55))
    np.testing.assert_allclose(normalized, [[2 / 44, 1.5 / 33], [42 / 44, 3 / 33], [15.25 / 44, 31.5 / 33]])


def test_box_is_clamped_and_landmarks_are_not_clipped() -> None:
    points = np.array([[-4.0, 10.0], [30.0, 12.0], [14.5, 95.0]])
    # enlarged to (-9.75, -13.15, 94.75, 210.15), clamped to the 90 x 80 image's [0, 89] x [0, 79]
    crop_box, normalized = TableBox(1.1, "auto").apply(points, (-5.0, -3.0, 90.0, 200.0), 90, 80)
    assert crop_box == CropBox(0, 0, 89, 79)
    np.testing.assert_allclose(normalized, [[-4 / 89, 10 / 79], [30 / 89, 12 / 79], [14.5 / 89, 95 / 79]])
    assert normalized.min() < 0 and normalized.max() > 1


def test_box_sources_auto_box_landmarks_and_scale_one() -> None:
    points = np.array([[20.0, 20.0], [40.0, 50.0]])
    box = (10.0, 12.0, 50.0, 60.0)
    assert TableBox(1.0, "auto").apply(points, box, 96, 96)[0] == CropBox(10.0, 12.0, 50.0, 60.0)
    assert TableBox(1.0, "auto").apply(points, None, 96, 96)[0] == CropBox(20.0, 20.0, 40.0, 50.0)
    assert TableBox(1.0, "landmarks").apply(points, box, 96, 96)[0] == CropBox(20.0, 20.0, 40.0, 50.0)
    assert TableBox(1.0, "box").apply(points, box, 96, 96)[0] == CropBox(10.0, 12.0, 50.0, 60.0)
    # scale 1.5: a quarter of the size on each side
    assert TableBox(1.5, "box").apply(points, box, 96, 96)[0] == CropBox(0.0, 0.0, 60.0, 72.0)
    with pytest.raises(ValueError, match="needs a box"):
        TableBox(1.1, "box").apply(points, None, 96, 96)
    with pytest.raises(ValueError, match="needs landmarks"):
        TableBox(1.1, "landmarks").apply(None, box, 96, 96)
    with pytest.raises(ValueError, match="box_from must be one of"):
        TableBox(1.1, "detector")


def test_rule_parameters_change_the_fingerprint(data_root: Path) -> None:
    one = read_table(data_root, file="faces.csv", bad=BadInput("raise"))[0]
    two = read_table(data_root, file="faces.csv", scale=1.2, bad=BadInput("raise"))[0]
    assert one.fingerprint() != two.fingerprint()
    assert "TableBox(scale=1.2, box_from='auto')" in two.fingerprint()


@pytest.mark.parametrize("file", ["faces.csv", "faces.jsonl"])
@pytest.mark.parametrize("box_from", ["auto", "landmarks"])
def test_crops_and_landmarks_match_the_official_arithmetic(data_root: Path, file: str, box_from: str) -> None:
    bad = BadInput("skip")
    records = read_table(data_root, file=file, scale=1.1, box_from=box_from, bad=bad)
    assert len(records) == (4 if box_from == "auto" else 3)
    for record in records:
        image = record.image.load()
        assert image.shape[2] == 3
        height, width = image.shape[:2]
        crop_box, normalized = record.rule.apply(record.points, record.box, width, height)
        points = None if record.points is None else record.points.tolist()
        box = list(record.box) if record.box is not None and box_from == "auto" else None
        expected_box, expected_crop, expected_points = official_table_crop(image, points, box, 1.1)
        assert (crop_box.x0, crop_box.y0, crop_box.x1, crop_box.y1) == expected_box
        np.testing.assert_array_equal(crop_and_resize(image, crop_box, INPUT_SIZE), expected_crop)
        if expected_points is None:
            assert normalized is None
        else:
            assert normalized.dtype == np.float64
            np.testing.assert_array_equal(normalized, np.array(expected_points))
    gray = next(r for r in records if r.name == "faces_gray").image.load()
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_the_rounding_boundary_moves_the_crop_pixels(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_image(root / "a.png", width=48, height=48, seed=5)
    write_text(root / "t.csv", "image,x0,y0,box_x0,box_y0,box_x1,box_y1\na.png,20,20,5,5,25,25\n")
    (record,) = read_table(root, file="t.csv", bad=BadInput("raise"))
    image = record.image.load()
    crop_box, _ = record.rule.apply(record.points, record.box, 48, 48)
    crop = crop_and_resize(image, crop_box, INPUT_SIZE)
    np.testing.assert_array_equal(crop, cv2.resize(image[3:26, 3:26], (INPUT_SIZE, INPUT_SIZE)))
    assert not np.array_equal(crop, cv2.resize(image[4:26, 4:26], (INPUT_SIZE, INPUT_SIZE)))


# ---------------------------------------------------------------------------------------------------------
# The documented example.


def documentation_text() -> str:
    """The README, whose "Your own data" section documents the example."""
    return (REPO / "README.md").read_text()


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_example_is_read_as_the_dataset_yaml_says(tmp_path: Path, fmt: str) -> None:
    out = write_table_example(tmp_path / "data" / "mydata", fmt=fmt)
    assert out["data_root"] == tmp_path / "data"
    meta = yaml.safe_load(out["meta"].read_text())
    assert meta["format"] == "table" and meta["dir"] == "mydata"
    assert (out["meta"].parent / meta["landmarks"]) == out["scheme"]
    assert list(meta["metrics"]) == ["nme_io", "nme_box"]
    assert meta["train"] == "train" and meta["test"] == {"test": "test"}
    faces = out["faces"]
    assert [f["name"] for f in faces] == [f"images_{i:04d}" for i in range(1, 10)]
    split_faces = {"train": faces[:6], "test": faces[6:]}
    for split, expected in split_faces.items():
        spec = meta["splits"][split]
        assert spec == {"file": f"faces.{fmt}", "where": {"split": split}}
        records = read_records(meta["format"], out["data_root"] / meta["dir"], **spec)
        assert [r.name for r in records] == [f["name"] for f in expected]
        for record, face in zip(records, expected, strict=True):
            np.testing.assert_array_equal(record.points, face["landmarks"])
            assert record.points.shape == (5, 2)
            assert record.box == face["box"]
            assert record.attributes == {"split": split}
            image = record.image.load()
            assert image.shape == (96, 96, 3)
            crop_box, normalized = record.rule.apply(record.points, record.box, 96, 96)
            expected_box, expected_crop, expected_points = official_table_crop(
                image, record.points.tolist(), list(record.box), 1.1
            )
            assert (crop_box.x0, crop_box.y0, crop_box.x1, crop_box.y1) == expected_box
            np.testing.assert_array_equal(crop_and_resize(image, crop_box, INPUT_SIZE), expected_crop)
            np.testing.assert_array_equal(normalized, expected_points)


def test_example_loads_with_the_dataset_description_parser(tmp_path: Path) -> None:
    out = write_table_example(tmp_path / "mydata", n_train=2, n_test=1)
    meta = load_dataset_meta(str(out["meta"]))
    assert meta.landmarks.num_landmarks == 5 and meta.landmarks.flip_permutation == (1, 0, 2, 4, 3)
    assert [m.key for m in meta.metrics] == ["nme_io", "nme_box"]
    assert meta.metrics[0].indices == ((0,), (1,))
    assert meta.train == ("train",) and list(meta.test) == ["test"]
    counts = {}
    for name, spec in meta.splits.items():
        assert (spec.format, spec.dir) == ("table", "mydata")
        counts[name] = len(read_records(spec.format, out["data_root"] / spec.dir, **spec.args))
    assert counts == {"train": 2, "test": 1}


def test_example_scheme_is_the_documented_five_point_scheme(tmp_path: Path) -> None:
    out = write_table_example(tmp_path / "mydata", n_train=1, n_test=1)
    scheme = yaml.safe_load(out["scheme"].read_text())
    assert scheme["num_landmarks"] == 5
    assert scheme["flip_permutation"] == [1, 0, 2, 4, 3]
    assert scheme["norms"] == {"inter_ocular": [[0], [1]]}
    assert scheme["groups"] == {"eyes": [0, 1], "nose": [2, 2], "mouth": [3, 4]}
    loaded = load_landmark_scheme(str(out["scheme"]))
    assert (loaded.name, loaded.num_landmarks, loaded.flip_permutation) == ("face5", 5, (1, 0, 2, 4, 3))
    assert loaded.norm_indices("inter_ocular") == ((0,), (1,))
    perm = np.array(scheme["flip_permutation"])
    np.testing.assert_array_equal(perm[perm], np.arange(5))  # an involution
    # the eyes are left/right in the image like the scheme says: landmark 0 (right eye) on the image's left
    points = out["faces"][0]["landmarks"]
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]


def test_written_yaml_files_are_the_documented_blocks(tmp_path: Path) -> None:
    out = write_table_example(tmp_path / "mydata", n_train=2, n_test=1)
    blocks = fenced_blocks(documentation_text(), "yaml")
    assert out["scheme"].read_text() == SCHEME_YAML
    assert out["meta"].read_text() == DATASET_YAML.format(dir="mydata", table="faces.csv")
    assert out["scheme"].read_text() in blocks
    assert out["meta"].read_text() in blocks
    # another folder name only changes the dir: line
    other = write_table_example(tmp_path / "faces2", n_train=1, n_test=1)
    assert other["meta"].read_text() == out["meta"].read_text().replace("dir: mydata\n", "dir: faces2\n")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_documented_table_rows_are_the_ones_written(tmp_path: Path, fmt: str) -> None:
    out = write_table_example(tmp_path / "mydata", fmt="csv" if fmt == "csv" else "jsonl")
    (block,) = fenced_blocks(documentation_text(), fmt)
    written = out["table"].read_text().splitlines()
    shown = [line for line in block.splitlines() if line != "..."]
    assert len(shown) == (4 if fmt == "csv" else 1)
    assert all(line in written for line in shown)
    assert shown[0] == written[0]


def test_write_table_tree_is_the_example_and_other_counts_are_refused(tmp_path: Path) -> None:
    out = write_table_tree(tmp_path / "mydata", n_train=2, n_test=1, image_size=64, seed=3)
    assert [f["split"] for f in out["faces"]] == ["train", "train", "test"]
    assert cv2.imread(str(out["root"] / "images/0001.png")).shape == (64, 64, 3)
    again = write_table_example(tmp_path / "again" / "mydata", n_train=2, n_test=1, image_size=64, seed=3)
    assert out["table"].read_text() == again["table"].read_text()
    with pytest.raises(ValueError, match="5-point"):
        write_table_example(tmp_path / "x", num_landmarks=7)
