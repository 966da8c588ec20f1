"""Fuzzing every dataset reader with Hypothesis: a hostile file is read correctly or rejected clearly.

Every property starts from a tiny valid download written by the synthetic raw writers
(:mod:`pipnet_lit.synthetic.raw`: 2-4 faces, 32 px images) and applies mutations drawn by Hypothesis:
truncation at any byte, deleted / duplicated / extra lines and fields, non-numbers, NaN / inf, huge values,
negative sizes, empty files, other encodings (UTF-16, Latin-1 bytes, a BOM), duplicate image names, and
referenced images that are not images or have 0 x 0 / 1 x N / huge headers. Two kinds of property per format:

* *any mutation*: the reader returns records (finite (L, 2) landmarks, finite boxes, unique names, one record
  or one skip message per face line in training mode) or raises :class:`DataFormatError` naming the file
  (``file:line`` for line formats); never a bare IndexError, KeyError, UnicodeDecodeError, h5py OSError, ...
  from inside the reader. In evaluation mode (``BadInput("raise")``) it raises exactly when training mode
  (``BadInput("skip")``) skips something, with the first skip message.
* *skip count*: break k chosen faces in ways that surely make them bad; training mode skips exactly k, each
  message naming the file and the line or entry, and returns the other faces unchanged.

Examples are derandomized (the same on every run, so CI is reproducible) and few: the file runs in seconds.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")

from pipnet_lit.datasets.cache import CachedSplit, prepare_split, read_split  # noqa: E402
from pipnet_lit.datasets.pseudo_labels import read_pseudo_labels, write_pseudo_labels  # noqa: E402
from pipnet_lit.datasets.pts import read_pts  # noqa: E402
from pipnet_lit.datasets.readers import read_records  # noqa: E402
from pipnet_lit.datasets.readers.matlab import MatCellImage  # noqa: E402
from pipnet_lit.datasets.records import (  # noqa: E402
    BadInput,
    DataFormatError,
    FaceRecord,
    FileImage,
    MissingDownloadError,
)
from pipnet_lit.synthetic.raw import write_300w_tree  # noqa: E402
from pipnet_lit.synthetic.raw.aflw import write_aflw_tree  # noqa: E402
from pipnet_lit.synthetic.raw.celeba import write_celeba_tree  # noqa: E402
from pipnet_lit.synthetic.raw.cofw import write_cofw68_tree, write_cofw_tree, write_mat_v73  # noqa: E402
from pipnet_lit.synthetic.raw.table import write_table_example  # noqa: E402
from pipnet_lit.synthetic.raw.wflw import TRAIN_LIST, write_wflw_tree  # noqa: E402

SIZE = 32  # image side of the seed downloads


#: ``PIPNET_FUZZ_SCALE=50 pytest tests/test_fuzz_readers.py`` draws 50 times the examples, from a fresh random
#: seed each run (a deeper search after a reader change); unset, every run draws the same few examples.
FUZZ_SCALE = int(os.environ.get("PIPNET_FUZZ_SCALE", "0"))


def fuzz(max_examples: int) -> settings:
    """Few, derandomized examples; no deadline (a shared CI core is slow); no example database on disk."""
    return settings(
        max_examples=max_examples * max(1, FUZZ_SCALE),
        deadline=None,
        derandomize=not FUZZ_SCALE,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],  # the seed files make every example do a little I/O
    )


# ---------------------------------------------------------------------------------------------------------
# Seed downloads: written once per module; each example overwrites a few files and restores them after.


class Seeds(dict):
    """What the writers wrote (their return values), with a short repr for Hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"<seed downloads in {self['root']}>"


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("raw")
    return Seeds(
        {
            "root": root,
            "300w": write_300w_tree(root, n_per_folder=2, image_size=SIZE),
            "wflw": write_wflw_tree(root / "WFLW", n_train=3, n_test=3, image_size=SIZE),
            "celeba": write_celeba_tree(root, n_images=4, image_size=SIZE),
            "cofw": write_cofw_tree(root, n_train=3, n_test=2, image_size=SIZE),
            "cofw68": write_cofw68_tree(root, n_test=2, image_size=SIZE),
            "aflw": write_aflw_tree(root, n_faces=4, image_size=SIZE),
            "csv": write_table_example(root / "table_csv", n_train=2, n_test=1, image_size=SIZE, fmt="csv"),
            "jsonl": write_table_example(
                root / "table_jsonl", n_train=2, n_test=1, image_size=SIZE, fmt="jsonl"
            ),
        }
    )


@contextmanager
def replaced(files: dict[Path, bytes | None]) -> Iterator[None]:
    """Write (bytes) or delete (None) the given files for the block; put back what was there afterwards."""
    saved = {path: path.read_bytes() if path.is_file() else None for path in files}
    try:
        for path, data in files.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        yield
    finally:
        for path, data in saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)


# ---------------------------------------------------------------------------------------------------------
# Mutations of text files (bytes in, bytes out).

HOSTILE_TOKENS = (
    "", "nan", "-nan", "NaN", "inf", "-inf", "Infinity", "1e300", "-1e300", "1e400", "1e-400", "-7", "0",
    "-0", "abc", "0x1F", "1,5", "١٢", "1_0", "\x00", "9" * 400, "None", '"', ",", "#", ".", "/", "..",
    "\ufeff1", "é", "\t", "[", "{}",
)  # fmt: skip
TEXT_MUTATIONS = (
    "truncate", "empty", "utf16", "latin1", "bom", "crlf", "cr", "byte", "delete_line", "duplicate_line",
    "swap_lines", "extra_line", "blank_line", "replace_field", "delete_field", "duplicate_field",
    "append_field", "cut_line",
)  # fmt: skip


def _fields(line: bytes, sep: bytes | None) -> list[bytes]:
    """A line (no end) split into fields and separators: even positions are fields."""
    return line.split(sep) if sep is not None else re.split(rb"([ \t]+)", line)


def _join(parts: list[bytes], sep: bytes | None) -> bytes:
    return sep.join(parts) if sep is not None else b"".join(parts)


def _field_indices(parts: list[bytes], sep: bytes | None) -> list[int]:
    return list(range(len(parts))) if sep is not None else list(range(0, len(parts), 2))


def _mutate_once(draw: st.DrawFn, data: bytes, sep: bytes | None) -> bytes:
    kind = draw(st.sampled_from(TEXT_MUTATIONS))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "empty":
        return b""
    if kind == "utf16":
        return data.decode("utf-8", "replace").encode(draw(st.sampled_from(["utf-16", "utf-16-le"])))
    if kind == "latin1":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xe9", b"\xff", b"\x80", b"caf\xe9"])) + data[at:]
    if kind == "bom":
        return codecs.BOM_UTF8 + data
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n")
    if kind == "cr":
        return data.replace(b"\n", b"\r")
    if kind == "byte":
        if not data:
            return data
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    lines = data.splitlines(keepends=True)
    if not lines:
        return data
    i = draw(st.integers(0, len(lines) - 1))
    body = lines[i].rstrip(b"\r\n")
    end = lines[i][len(body) :] or b"\n"
    token = draw(st.one_of(st.sampled_from(HOSTILE_TOKENS), st.text(max_size=6))).encode("utf-8")
    if kind == "delete_line":
        del lines[i]
    elif kind == "duplicate_line":
        lines.insert(i, body + end)
    elif kind == "swap_lines":
        j = draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "extra_line":
        tokens = draw(st.lists(st.sampled_from(HOSTILE_TOKENS), min_size=1, max_size=6))
        lines.insert(i, _join([t.encode() for t in tokens], sep or b" ") + b"\n")
    elif kind == "blank_line":
        lines.insert(i, draw(st.sampled_from([b"\n", b"  \t\n", b"\r\n"])))
    elif kind == "cut_line":
        lines[i] = body[: draw(st.integers(0, len(body)))] + end
    else:
        parts = _fields(body, sep)
        j = draw(st.sampled_from(_field_indices(parts, sep)))
        if kind == "replace_field":
            parts[j] = token
        elif kind == "delete_field":
            if sep is None:  # the field and the separator after it (before it, for the last field)
                start = j if j + 1 < len(parts) else max(0, j - 1)
                del parts[start : start + 2]
            else:
                del parts[j]
        elif kind == "duplicate_field":
            parts.insert(j, parts[j] if sep is not None else parts[j] + b" ")
        elif kind == "append_field":
            parts.append(token if sep is not None else b" " + token)
        lines[i] = _join(parts, sep) + end
    return b"".join(lines)


@st.composite
def mutated_text(draw: st.DrawFn, seed: bytes, sep: bytes | None = None, max_steps: int = 3) -> bytes:
    """``seed`` after 1 to ``max_steps`` text mutations."""
    data = seed
    for _ in range(draw(st.integers(1, max_steps))):
        data = _mutate_once(draw, data, sep)
    return data


# JSON values a hostile JSON-lines row may hold in any field.
JSON_SCALARS = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1e300, -1e300, math.nan, math.inf, -math.inf, 10**400]),
    st.sampled_from(["", "abc", "nan", "1", ".", "/", "a/b", "\\", "\x00", "é"]),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


@st.composite
def mutated_jsonl(draw: st.DrawFn, seed: bytes) -> bytes:
    """A JSON-lines file with one field of one row set to a hostile value (or deleted), then text mutations"""
    lines = seed.splitlines(keepends=True)
    i = draw(st.integers(0, len(lines) - 1))
    entry = json.loads(lines[i])
    key = draw(st.sampled_from(["image", "landmarks", "box", "name", "split", "extra", "landmark"]))
    action = draw(st.sampled_from(["set", "delete", "coordinate", "not_an_object", "deep"]))
    if action == "set":
        entry[key] = draw(JSON_VALUES)
    elif action == "delete":
        entry.pop(key, None)
    elif action == "coordinate" and entry.get("landmarks"):
        k = draw(st.integers(0, len(entry["landmarks"]) - 1))
        entry["landmarks"][k][draw(st.integers(0, 1))] = draw(JSON_SCALARS)
    line = json.dumps(entry).encode()
    if action == "not_an_object":
        line = json.dumps(draw(JSON_VALUES)).encode()
    elif action == "deep":  # nesting deeper than the JSON parser's recursion limit
        line = b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    lines[i] = line + b"\n"
    data = b"".join(lines)
    if draw(st.booleans()):
        data = draw(mutated_text(data, max_steps=2))
    return data


# ---------------------------------------------------------------------------------------------------------
# What a reader may do with a hostile file.


def text_lines(data: bytes) -> list[str] | None:
    """The lines a reader sees in ``data`` (UTF-8, BOM dropped, universal newlines); None: not UTF-8."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return list(io.StringIO(text, newline=None))


def face_lines(data: bytes, comments: bool = False) -> int | None:
    """Non-blank lines (not ``#`` comments when ``comments``) of a one-face-a-line file; None: not UTF-8."""
    lines = text_lines(data)
    if lines is None:
        return None
    fields = [line.split() for line in lines]
    return sum(1 for f in fields if f and not (comments and f[0].startswith("#")))


def assert_names_file(err: Exception, path: Path, line: bool = False) -> None:
    """A DataFormatError whose message names ``path`` (and ``path:<line>`` when ``line``)."""
    assert isinstance(err, DataFormatError), f"{type(err).__name__} leaked: {err}"
    message = str(err)
    assert str(path) in message, f"the message does not name {path}: {message}"
    if line:
        assert re.search(re.escape(str(path)) + r":\d+", message), f"no {path}:<line> in: {message}"


def assert_names_folder_file(err: Exception, folder: Path, name: str) -> None:
    """A DataFormatError about a folder of several files (a crop cache, pseudo-labels) that names the folder
    and the damaged file: with its line when the file's own content is wrong, or as one side of a mismatch."""
    assert isinstance(err, DataFormatError), f"{type(err).__name__} leaked: {err}"
    message = str(err)
    assert str(folder) in message and name in message, f"the message does not name {folder}/{name}: {message}"
    others = [p.name for p in folder.iterdir() if p.is_file() and p.name != name]
    if name != "manifest.json" and not any(other in message for other in others):  # not a mismatch
        assert re.search(re.escape(str(folder / name)) + r":\d+", message), f"no {name}:<line> in: {message}"


def assert_records(records: list[FaceRecord], num_landmarks: int | None) -> None:
    """Finite (L, 2) float64 landmarks, finite 4-number boxes, unique names; the box rule is safe to run."""
    names = [r.name for r in records]
    assert len(set(names)) == len(names), f"duplicate crop names {names}"
    for r in records:
        if r.points is not None:
            points = np.asarray(r.points)
            assert points.dtype == np.float64 and points.shape == (num_landmarks, 2), (r.source, points.shape)
            assert np.isfinite(points).all(), r.source
        if r.box is not None:
            assert len(r.box) == 4 and all(math.isfinite(float(v)) for v in r.box), (r.source, r.box)
        # What the crop cache does next: the rule may refuse the box (ValueError: skipped there), nothing else
        try:
            r.rule.apply(r.points, r.box, SIZE, SIZE)[0].check(r.source)
        except ValueError:
            pass


def read_both(
    read: Callable[[BadInput], list[FaceRecord]], path: Path, line: bool
) -> tuple[list[FaceRecord], BadInput] | None:
    """Run ``read`` in training (skip) and evaluation (raise) mode and check they agree.

    Returns (records, bad) of training mode, or None when the file as a whole was refused (then both
    modes raise a DataFormatError naming ``path``). Evaluation mode raises exactly when training mode
    skipped something, with its first message; otherwise both return the same records.
    """
    bad = BadInput("skip", what="train")
    try:
        records = read(bad)
    except Exception as err:  # noqa: BLE001 - the property is what may come out
        assert_names_file(err, path, line)
        with pytest.raises(DataFormatError):
            read(BadInput("raise"))
        return None
    for message in bad.skipped:
        assert path.name in message, message
    try:
        strict = read(BadInput("raise"))
    except Exception as err:  # noqa: BLE001
        assert isinstance(err, DataFormatError), f"{type(err).__name__} leaked: {err}"
        assert bad.skipped and str(err).startswith(bad.skipped[0]), (str(err), bad.skipped)
        return records, bad
    assert not bad.skipped, bad.skipped
    assert [r.fingerprint() for r in strict] == [r.fingerprint() for r in records]
    return records, bad


def same_faces(records: list[FaceRecord], expected: list[FaceRecord]) -> None:
    """Records equal to ``expected``: names, landmarks, boxes and attributes."""
    assert [r.name for r in records] == [r.name for r in expected]
    for got, want in zip(records, expected, strict=True):
        if want.points is None:
            assert got.points is None
        else:
            np.testing.assert_array_equal(got.points, want.points)
        assert got.box == want.box
        assert got.attributes == want.attributes


# ---------------------------------------------------------------------------------------------------------
# 300W .pts


def pts_paths(raw: dict[str, Any]) -> list[Path]:
    return sorted((raw["300w"] / "afw").glob("*.pts"))


@fuzz(80)
@given(data=st.data())
def test_pts_any_mutation_reads_or_names_file_and_line(raw: dict[str, Any], data: st.DataObject) -> None:
    path = pts_paths(raw)[0]
    seed = path.read_bytes()
    mutated = data.draw(mutated_text(seed))
    with replaced({path: mutated}):
        try:
            points = read_pts(path)
        except Exception as err:  # noqa: BLE001
            assert_names_file(err, path, line=True)
            return
    header = text_lines(mutated)
    assert header is not None
    n_points = int(header[1].partition(":")[2])
    assert points.dtype == np.float64 and points.shape == (n_points, 2) and np.isfinite(points).all()


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        # n_points far beyond the file: was a MemoryError, then a ValueError (maximum dimension exceeded)
        ("version: 1\nn_points: 99999999999999\n{\n1 2\n}\n", 5, "found '}' after 1 points"),
        ("version: 1\nn_points: " + "9" * 400 + "\n{\n1 2\n}\n", 5, "found '}' after 1 points"),
        # UTF-16: was an error without the line
        ("version: 1\nn_points: 1\n{\n1 2\n}\n".encode("utf-16").decode("latin-1"), 1, "not UTF-8"),
    ],
)
def test_pts_regressions_name_the_line(tmp_path: Path, text: str, line: int, phrase: str) -> None:
    path = tmp_path / "face.pts"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataFormatError, match=rf"face\.pts:{line}: .*{re.escape(phrase)}"):
        read_pts(path)


def test_pts_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "face.pts"
    path.write_bytes(codecs.BOM_UTF8 + b"version: 1\nn_points: 1\n{\n1.5 2\n}\n")
    np.testing.assert_array_equal(read_pts(path), [[1.5, 2.0]])


PTS_BREAKS = (
    "nan",
    "text",
    "truncate",
    "extra_point",
    "fewer_points",
    "more_points",
    "utf16",
    "no_pts",
    "no_image",
)


def _break_pts(draw: st.DrawFn, kind: str, pts: Path, image: Path) -> dict[Path, bytes | None]:
    text = pts.read_bytes()
    lines = text.splitlines(keepends=True)
    point = draw(st.integers(3, len(lines) - 2))  # a point line
    if kind in ("nan", "text"):
        x, y = lines[point].split()
        value = draw(
            st.sampled_from([b"nan", b"inf", b"-inf", b"1e400"] if kind == "nan" else [b"abc", b"1,5"])
        )
        lines[point] = (value + b" " + y if draw(st.booleans()) else x + b" " + value) + b"\n"
        return {pts: b"".join(lines)}
    if kind == "truncate":
        return {pts: text[: draw(st.integers(0, len(text) - 2))]}  # at least the closing brace's line goes
    if kind == "extra_point":
        return {pts: b"".join([*lines[:point], b"1.0 2.0\n", *lines[point:]])}
    if kind in ("fewer_points", "more_points"):
        n = len(lines) - 4 + (-1 if kind == "fewer_points" else 1)
        return {pts: b"".join([lines[0], f"n_points: {n}\n".encode(), *lines[2:]])}
    if kind == "utf16":
        return {pts: text.decode().encode("utf-16")}
    return {pts if kind == "no_pts" else image: None}


@fuzz(30)
@given(data=st.data())
def test_300w_skips_exactly_the_broken_faces(raw: dict[str, Any], data: st.DataObject) -> None:
    root, folders = raw["300w"], ["afw", "helen/trainset"]
    seed = read_records("300w", root, folders=folders)
    images = {r.name: r.image.path for r in seed}
    broken = data.draw(st.sets(st.sampled_from(sorted(images)), max_size=len(images)))
    files: dict[Path, bytes | None] = {}
    for name in sorted(broken):
        kind = data.draw(st.sampled_from(PTS_BREAKS))
        files.update(_break_pts(data.draw, kind, images[name].with_suffix(".pts"), images[name]))
    bad = BadInput("skip", what="train")
    with replaced(files):
        if any(not any(p.suffix == ".jpg" for p in (root / f).iterdir()) for f in folders):
            with pytest.raises(MissingDownloadError, match="no images"):  # a folder of .pts files alone
                read_records("300w", root, bad=bad, folders=folders)
            return
        records = read_records("300w", root, bad=bad, folders=folders)
        with pytest.raises(DataFormatError) if broken else nullcontext():
            read_records("300w", root, folders=folders)
    assert len(bad.skipped) == len(broken), bad.skipped
    for name in broken:  # each message names the face's .pts or image file
        assert sum(images[name].stem in message for message in bad.skipped) == 1, (name, bad.skipped)
    same_faces(records, [r for r in seed if r.name not in broken])


def test_300w_two_images_of_one_stem_are_a_format_error(tmp_path: Path) -> None:
    root = write_300w_tree(tmp_path, n_per_folder=1, image_size=SIZE)
    image = next((root / "afw").glob("*.jpg"))
    shutil.copy(image, image.with_suffix(".png"))
    with pytest.raises(DataFormatError, match=r"two images share the stem .*afw"):
        read_records("300w", root, folders=["afw"], bad=BadInput("skip"))


# ---------------------------------------------------------------------------------------------------------
# WFLW annotation lists


@fuzz(60)
@given(data=st.data())
def test_wflw_any_mutation(raw: dict[str, Any], data: st.DataObject) -> None:
    root = raw["wflw"]["root"]
    path = root / TRAIN_LIST
    mutated = data.draw(mutated_text(path.read_bytes()))
    with replaced({path: mutated}):
        result = read_both(lambda bad: read_records("wflw", root, bad=bad, file=TRAIN_LIST), path, line=True)
    if result is None:
        assert face_lines(mutated) is None  # only a file that is not UTF-8 is refused as a whole
        return
    records, bad = result
    assert_records(records, 98)
    assert len(records) + len(bad.skipped) == face_lines(mutated)


def test_wflw_list_that_is_not_utf8_names_file_and_line(raw: dict[str, Any]) -> None:
    root = raw["wflw"]["root"]
    path = root / TRAIN_LIST
    first, rest = path.read_bytes().split(b"\n", 1)
    latin1 = first + b"\n" + rest.replace(b".jpg", b"\xe9.jpg", 1)  # on line 2: was UnicodeDecodeError
    with replaced({path: latin1}):
        with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: not UTF-8")):
            read_records("wflw", root, bad=BadInput("skip"), file=TRAIN_LIST)


WFLW_BREAKS = ("nan", "text", "drop_field", "extra_field", "empty_rect", "flag", "no_image", "cut")


@fuzz(30)
@given(data=st.data())
def test_wflw_skips_exactly_the_broken_lines(raw: dict[str, Any], data: st.DataObject) -> None:
    root = raw["wflw"]["root"]
    path = root / TRAIN_LIST
    seed_text = path.read_bytes()
    seed = read_records("wflw", root, file=TRAIN_LIST)
    lines = seed_text.splitlines()
    broken = data.draw(st.sets(st.integers(0, len(lines) - 1)))
    for i in broken:
        fields = lines[i].split(b" ")
        kind = data.draw(st.sampled_from(WFLW_BREAKS))
        if kind in ("nan", "text"):
            j = data.draw(st.integers(0, 199))  # a coordinate or a rect value
            fields[j] = data.draw(
                st.sampled_from([b"nan", b"inf", b"-1e400"] if kind == "nan" else [b"x", b""])
            )
        elif kind == "drop_field":
            del fields[data.draw(st.integers(0, len(fields) - 1))]
        elif kind == "extra_field":
            fields.insert(data.draw(st.integers(0, len(fields))), b"0")
        elif kind == "empty_rect":
            fields[198] = fields[196]  # x_max = x_min
        elif kind == "flag":
            fields[200 + data.draw(st.integers(0, 5))] = b"yes"
        elif kind == "no_image":
            fields[-1] = b"0--Parade/missing.jpg"
        line = b" ".join(fields)
        if kind == "cut":
            line = line[: data.draw(st.integers(1, len(line) - 1))]  # not blank: a line is still there
        lines[i] = line
    bad = BadInput("skip", what="train")
    with replaced({path: b"".join(line + b"\n" for line in lines)}):
        records = read_records("wflw", root, bad=bad, file=TRAIN_LIST)
    assert len(bad.skipped) == len(broken), bad.skipped
    for i, message in zip(sorted(broken), bad.skipped, strict=True):
        assert message.startswith(f"{path}:{i + 1}:"), message
    same_faces(records, [r for k, r in enumerate(seed) if k not in broken])


@fuzz(30)
@given(data=st.data())
def test_wflw_subset_file_any_mutation(raw: dict[str, Any], data: st.DataObject) -> None:
    root = raw["wflw"]["root"]
    subsets = dict(raw["wflw"]["subset_files"])
    name = data.draw(st.sampled_from(sorted(subsets)))
    path = root / subsets[name]
    mutated = data.draw(mutated_text(path.read_bytes()))
    test_file = raw["wflw"]["test_file"]
    with replaced({path: mutated}):
        result = read_both(
            lambda bad: read_records("wflw", root, bad=bad, file=test_file, subset_files=subsets), path, True
        )
    if result is not None:
        records, bad = result
        assert_records(records, 98)
        assert len(records) == len(raw["wflw"]["test"])  # a subset line never costs a face
        assert len(bad.skipped) <= face_lines(mutated)


# ---------------------------------------------------------------------------------------------------------
# CelebA boxes and the folder reader's box file (same line layout, ints vs floats)


@fuzz(60)
@given(data=st.data())
def test_celeba_any_mutation(raw: dict[str, Any], data: st.DataObject) -> None:
    root = raw["celeba"]["dir"]
    path = raw["celeba"]["bbox_file"]
    mutated = data.draw(mutated_text(path.read_bytes()))
    with replaced({path: mutated}):
        result = read_both(lambda bad: read_records("celeba", root, bad=bad), path, line=True)
    if result is None:
        assert face_lines(mutated) is None
        return
    records, bad = result
    assert_records(records, None)
    assert len(records) + len(bad.skipped) == face_lines(mutated)


def test_celeba_and_folder_box_files_that_are_not_utf8_name_file_and_line(raw: dict[str, Any]) -> None:
    root, path = raw["celeba"]["dir"], raw["celeba"]["bbox_file"]
    utf16 = path.read_bytes().decode().encode("utf-16")
    with replaced({path: utf16, root / "boxes.txt": utf16}):  # was UnicodeDecodeError
        with pytest.raises(DataFormatError, match=re.escape(f"{path}:1: not UTF-8")):
            read_records("celeba", root, bad=BadInput("skip"))
        with pytest.raises(DataFormatError, match=re.escape(f"{root / 'boxes.txt'}:1: not UTF-8")):
            read_records("folder", root, bad=BadInput("skip"), images="img_celeba", boxes="boxes.txt")


def _break_box_line(draw: st.DrawFn, line: bytes, integers: bool) -> bytes:
    name, *numbers = line.split(b" ")
    kind = draw(st.sampled_from(["text", "nan", "drop", "extra", "negative_size", "no_image", "cut"]))
    if kind == "text":
        numbers[draw(st.integers(0, 3))] = draw(
            st.sampled_from([b"x", b"1.5"] if integers else [b"x", b"1,5"])
        )
    elif kind == "nan":
        numbers[draw(st.integers(0, 3))] = draw(st.sampled_from([b"nan", b"inf", b"1e400"]))
    elif kind == "drop":
        del numbers[draw(st.integers(0, 3))]
    elif kind == "extra":
        numbers.append(b"7")
    elif kind == "negative_size":  # x_max < x_min (or y)
        k = draw(st.integers(0, 1))
        numbers[k + 2] = str(int(float(numbers[k])) - draw(st.integers(2, 10**6))).encode()
    elif kind == "no_image":
        name = b"missing.jpg"
    out = b" ".join([name, *numbers])
    if kind == "cut":  # the line ends inside the image name or right after it: fewer than 5 fields
        out = out[: draw(st.integers(1, len(name) + 1))]
    return out


@fuzz(30)
@given(data=st.data())
def test_celeba_skips_exactly_the_broken_lines(raw: dict[str, Any], data: st.DataObject) -> None:
    root = raw["celeba"]["dir"]
    path = raw["celeba"]["bbox_file"]
    seed = read_records("celeba", root)
    lines = path.read_bytes().splitlines()
    broken = data.draw(st.sets(st.integers(0, len(lines) - 1)))
    for i in broken:
        lines[i] = _break_box_line(data.draw, lines[i], integers=True)
    with_dups = lines + data.draw(st.lists(st.sampled_from(lines), max_size=2))  # a second box for an image
    bad = BadInput("skip", what="train")
    with replaced({path: b"".join(line + b"\n" for line in with_dups)}):
        records = read_records("celeba", root, bad=bad)
    kept = [r for k, r in enumerate(seed) if k not in broken]
    # a duplicate of a broken line is broken too; of a good line, it is a second box for its image
    assert len(bad.skipped) == len(broken) + len(with_dups) - len(lines), bad.skipped
    same_faces(records, kept)


@fuzz(50)
@given(data=st.data())
def test_folder_boxes_any_mutation(raw: dict[str, Any], data: st.DataObject) -> None:
    root = raw["celeba"]["dir"]
    path = root / "boxes.txt"
    seed = raw["celeba"]["bbox_file"].read_bytes()
    mutated = data.draw(mutated_text(seed))
    with replaced({path: mutated}):
        result = read_both(
            lambda bad: read_records("folder", root, bad=bad, images="img_celeba", boxes="boxes.txt"),
            path,
            True,
        )
    if result is None:
        return  # not UTF-8, or two lines whose names collide (both errors name the file and a line)
    records, bad = result
    assert_records(records, None)
    assert len(records) + len(bad.skipped) == face_lines(mutated, comments=True)


@fuzz(30)
@given(data=st.data())
def test_folder_boxes_skip_exactly_the_broken_lines(raw: dict[str, Any], data: st.DataObject) -> None:
    root = raw["celeba"]["dir"]
    path = root / "boxes.txt"
    lines = raw["celeba"]["bbox_file"].read_bytes().splitlines()
    spec = {"images": "img_celeba", "boxes": "boxes.txt"}
    with replaced({path: b"\n".join(lines) + b"\n"}):
        seed = read_records("folder", root, **spec)
    broken = data.draw(st.sets(st.integers(0, len(lines) - 1)))
    for i in broken:
        lines[i] = _break_box_line(data.draw, lines[i], integers=False)
    comment = [b"# a comment line is not a face"] if data.draw(st.booleans()) else []
    bad = BadInput("skip", what="train")
    with replaced({path: b"\n".join(comment + lines) + b"\n"}):
        records = read_records("folder", root, bad=bad, **spec)
    assert len(bad.skipped) == len(broken), bad.skipped
    assert all(re.match(re.escape(str(path)) + r":\d+: ", m) for m in bad.skipped)
    kept = [r for k, r in enumerate(seed) if k not in broken]
    assert [r.name for r in records] == [r.name for r in kept]
    assert [r.box for r in records] == [r.box for r in kept]


# ---------------------------------------------------------------------------------------------------------
# Table reader: CSV and JSON lines


def csv_rows(data: bytes) -> int | None:
    """Data rows with a non-blank cell, as the csv module splits the text; None: not UTF-8 or not CSV."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        return None
    return sum(1 for cells in rows[1:] if any(cell.strip() for cell in cells))


@fuzz(60)
@given(data=st.data())
def test_table_csv_any_mutation(raw: dict[str, Any], data: st.DataObject) -> None:
    root, path = raw["csv"]["root"], raw["csv"]["table"]
    mutated = data.draw(mutated_text(path.read_bytes(), sep=b","))
    with replaced({path: mutated}):
        result = read_both(lambda bad: read_records("table", root, bad=bad, file=path.name), path, line=True)
    if result is None:
        return  # not UTF-8, not CSV, or a bad header: the file as a whole
    records, bad = result
    assert_records(records, 5)
    assert len(records) + len(bad.skipped) == csv_rows(mutated)


@fuzz(60)
@given(data=st.data())
def test_table_jsonl_any_mutation(raw: dict[str, Any], data: st.DataObject) -> None:
    root, path = raw["jsonl"]["root"], raw["jsonl"]["table"]
    mutated = data.draw(mutated_jsonl(path.read_bytes()))
    with replaced({path: mutated}):
        result = read_both(lambda bad: read_records("table", root, bad=bad, file=path.name), path, line=True)
    if result is None:
        assert face_lines(mutated) is None
        return
    records, bad = result
    num_landmarks = next((len(r.points) for r in records if r.points is not None), None)
    assert_records(records, num_landmarks)  # the first labeled row sets L
    assert len(records) + len(bad.skipped) == face_lines(mutated)


def test_table_csv_that_the_csv_module_refuses_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "faces.csv"
    path.write_text('image,box_x0,box_y0,box_x1,box_y1\na.png,1,2,3,4\n"' + "x" * 200_000 + "\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:3: the csv module")):  # was _csv.Error
        read_records("table", tmp_path, bad=BadInput("skip"), file="faces.csv")
    path.write_bytes("image,box_x0,box_y0,box_x1,box_y1\n".encode("utf-16"))
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:1: not UTF-8")):  # was UnicodeDecodeError
        read_records("table", tmp_path, bad=BadInput("skip"), file="faces.csv")


HUGE_INT = "1" + "0" * 400  # beyond float range: float() raises OverflowError
LONG_INT = "1" + "0" * 5000  # beyond Python's 4300 digits for int(text): json.loads raises ValueError
DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError


@pytest.mark.parametrize(
    ("line", "phrase"),
    [
        ('{"image": "a.png", "landmarks": [[1e999999, 1], [2, 3]]}', "not a finite number"),  # inf: was fine
        ('{"image": "a.png", "landmarks": [[' + HUGE_INT + ", 1], [2, 3]]}", "not a finite number"),
        ('{"image": "a.png", "box": [0, 0, ' + LONG_INT + ", 9]}", "not JSON this reader can read"),
        ('{"image": ' + DEEP + "}", "not JSON this reader can read"),
        ('{"image": ".", "box": [0, 0, 9, 9]}', "crop name '' is empty"),  # no file name: was ValueError
        ('{"image": "/", "box": [0, 0, 9, 9]}', "crop name '' is empty"),
        (
            '{"image": "' + "9" * 400 + '.png", "box": [0, 0, 9, 9]}',
            "image not found",
        ),  # was OSError: too long
    ],
    ids=["inf", "huge-int", "long-int", "deep", "dot", "slash", "long-name"],
)
def test_table_jsonl_rows_that_crashed_the_reader_are_skipped(tmp_path: Path, line: str, phrase: str) -> None:
    path = tmp_path / "faces.jsonl"
    path.write_text(line + "\n")
    bad = BadInput("skip")
    assert read_records("table", tmp_path, bad=bad, file="faces.jsonl") == []
    assert len(bad.skipped) == 1 and bad.skipped[0].startswith(f"{path}:1: ") and phrase in bad.skipped[0]


def _break_csv_row(draw: st.DrawFn, row: bytes) -> bytes:
    cells = row.split(b",")
    kind = draw(st.sampled_from(["value", "one_empty", "drop", "extra", "empty_box", "no_image", "no_path"]))
    if kind == "value":
        cells[draw(st.integers(1, 14))] = draw(
            st.sampled_from([b"nan", b"inf", b"-inf", b"1e400", b"x", b"1_0x"])
        )
    elif kind == "one_empty":
        cells[draw(st.integers(1, 10))] = b""
    elif kind == "drop":
        del cells[draw(st.integers(0, len(cells) - 1))]
    elif kind == "extra":
        cells.insert(draw(st.integers(0, len(cells))), b"1")
    elif kind == "empty_box":
        cells[13] = cells[11]  # box_x1 = box_x0
    elif kind == "no_image":
        cells[0] = b"images/missing.png"
    else:
        cells[0] = b""
    return b",".join(cells)


@fuzz(30)
@given(data=st.data())
def test_table_csv_skips_exactly_the_broken_rows(raw: dict[str, Any], data: st.DataObject) -> None:
    root, path = raw["csv"]["root"], raw["csv"]["table"]
    seed = read_records("table", root, file=path.name)
    header, *rows = path.read_bytes().splitlines()
    broken = data.draw(st.sets(st.integers(0, len(rows) - 1)))
    for i in broken:
        rows[i] = _break_csv_row(data.draw, rows[i])
    bad = BadInput("skip", what="train")
    with replaced({path: b"\n".join([header, *rows]) + b"\n"}):
        records = read_records("table", root, bad=bad, file=path.name)
    assert len(bad.skipped) == len(broken), bad.skipped
    for i, message in zip(sorted(broken), bad.skipped, strict=True):
        assert message.startswith(f"{path}:{i + 2}:"), message
    same_faces(records, [r for k, r in enumerate(seed) if k not in broken])


JSONL_BREAKS = (
    {"landmarks": "nan"}, {"landmarks": [[1.0, None]]}, {"landmarks": [[1.0]]}, {"box": [1, 2, 3]},
    {"box": [5, 5, 5, 9]}, {"box": [0, 0, 1e400, 1]}, {"image": "images/missing.png"}, {"image": 7},
    {"landmarks": [[1.0, True]] * 5}, {"landmarks": [[10**400, 1]] * 5}, {"name": [1]},
)  # fmt: skip


@fuzz(30)
@given(data=st.data())
def test_table_jsonl_skips_exactly_the_broken_rows(raw: dict[str, Any], data: st.DataObject) -> None:
    root, path = raw["jsonl"]["root"], raw["jsonl"]["table"]
    seed = read_records("table", root, file=path.name)
    lines = path.read_bytes().splitlines()
    broken = data.draw(st.sets(st.integers(0, len(lines) - 1)))
    for i in broken:
        change = data.draw(st.sampled_from(JSONL_BREAKS + ("not json", "not an object")))
        if change == "not json":
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i]) - 1))] or b"{"
        elif change == "not an object":
            lines[i] = b"[1, 2]"
        else:
            text = json.dumps({**json.loads(lines[i]), **change})
            lines[i] = text.replace("Infinity", "1e400").encode()  # 1e400 reads back as inf
    bad = BadInput("skip", what="train")
    with replaced({path: b"\n".join(lines) + b"\n"}):
        records = read_records("table", root, bad=bad, file=path.name)
    assert len(bad.skipped) == len(broken), bad.skipped
    for i, message in zip(sorted(broken), bad.skipped, strict=True):
        assert message.startswith(f"{path}:{i + 1}:"), message
    same_faces(records, [r for k, r in enumerate(seed) if k not in broken])


# ---------------------------------------------------------------------------------------------------------
# MATLAB files: AFLW (v5), COFW (v7.3), COFW-68 (v5 boxes and points)


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: bytes) -> bytes:
    """A binary file truncated, with bytes overwritten, a block zeroed, or emptied."""
    kind = draw(st.sampled_from(["truncate", "flip", "zero_block", "empty", "append"]))
    if kind == "truncate":
        return seed[: draw(st.integers(0, len(seed) - 1))]
    if kind == "empty":
        return b""
    if kind == "append":
        return seed + draw(st.binary(min_size=1, max_size=64))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        else:
            data[at : at + draw(st.integers(1, 256))] = b"\x00" * len(data[at : at + 256])
    return bytes(data[: len(seed)])


def _hostile_number(draw: st.DrawFn) -> float:
    return draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, -5.0, 0.0, 1e-300]))


def _aflw_variables(raw: dict[str, Any]) -> dict[str, Any]:
    names = np.empty((len(raw["aflw"]["names"]), 1), dtype=object)
    names[:, 0] = raw["aflw"]["names"]
    points = raw["aflw"]["points"]
    return {
        "bbox": raw["aflw"]["bbox"].copy(),
        "data": np.concatenate([points[:, :, 0], points[:, :, 1]], axis=1),
        "nameList": names,
        "ra": raw["aflw"]["ra"].astype(np.float64)[None, :],
        "mask_new": raw["aflw"]["mask"].copy(),
    }


def _save_v5(variables: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    scipy_io.savemat(buffer, variables, format="5")
    return buffer.getvalue()


@st.composite
def mutated_aflw(draw: st.DrawFn, variables: dict[str, Any]) -> bytes:
    """AFLWinfo_release.mat with a variable changed (values, shape, class, presence), or its bytes damaged."""
    kind = draw(st.sampled_from(["value", "shape", "class", "delete", "ra", "name", "bytes"]))
    key = draw(st.sampled_from(["bbox", "data", "mask_new", "ra", "nameList"]))
    v = {k: (a.copy() if isinstance(a, np.ndarray) else a) for k, a in variables.items()}
    n = len(v["bbox"])
    if kind == "value" and key != "nameList":
        flat = v[key].reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = _hostile_number(draw)
    elif kind == "shape":
        v[key] = draw(st.sampled_from([v[key][:-1], v[key][:, :-1], v[key].T, np.zeros((0, 0)), v[key][:1]]))
    elif kind == "class":
        v[key] = draw(st.sampled_from(["text", np.array([[True, False]]), np.zeros((n, 4), np.int8)]))
    elif kind == "delete":
        del v[key]
    elif kind == "ra":
        v["ra"] = np.array(
            [draw(st.sampled_from([[1, 1, 2, 3], [0, 1, 2, 3], [1.5, 2, 3, 4], [9, 1, 2, 3], [1]]))]
        )
    elif kind == "name":
        cell = draw(
            st.sampled_from([7.0, "", "   ", "nope/missing.jpg", np.array([["a", "b"]]), np.zeros((2, 2))])
        )
        v["nameList"][draw(st.integers(0, n - 1)), 0] = cell
    data = _save_v5(v)
    if kind == "bytes":
        data = draw(mutated_bytes(data))
    return data


@fuzz(50)
@given(data=st.data())
def test_aflw_any_mutation(raw: dict[str, Any], data: st.DataObject) -> None:
    root, path = raw["aflw"]["dir"], raw["aflw"]["mat"]
    mutated = data.draw(mutated_aflw(_aflw_variables(raw)))
    with replaced({path: mutated}):
        for part in ("train", "test"):
            spec = {"part": part, "split_point": 2}
            result = read_both(
                lambda bad, spec=spec: read_records("aflw", root, bad=bad, **spec), path, False
            )
            if result is not None:
                records, bad = result
                assert_records(records, 19)
                if part == "train":  # ra[:2]; the test part is the rest of a (maybe shorter) ra
                    assert len(records) + len(bad.skipped) == 2
                else:
                    assert len(records) + len(bad.skipped) <= len(raw["aflw"]["ra"]) - 2


def test_aflw_ra_shorter_than_the_split_point_names_the_file(raw: dict[str, Any]) -> None:
    root, path = raw["aflw"]["dir"], raw["aflw"]["mat"]
    variables = _aflw_variables(raw)
    variables["ra"] = variables["ra"][:, :1]
    with replaced({path: _save_v5(variables)}):  # was a bare ValueError
        with pytest.raises(DataFormatError, match=re.escape(f"{path}: split_point=2 is outside 0..1")):
            read_records("aflw", root, part="train", split_point=2)


@pytest.mark.parametrize(
    ("offset", "value", "phrase"),
    [
        (48, 146, "unknown type 146"),  # bbox's data element: type code 146 instead of 9 (miDOUBLE)
        (17, 0x0C, "data elements, not 2"),  # bbox's flags: complex, with no imaginary part
        (0, 7, "element type 7"),  # bbox is no longer an array
        (4, 250, "runs past"),  # bbox's byte count
    ],
)
def test_aflw_damaged_v5_file_is_refused_before_scipy_crashes(
    raw: dict[str, Any], offset: int, value: int, phrase: str
) -> None:
    """scipy.io.loadmat trusts these bytes: the first two cases crashed the process (segmentation fault)."""
    root, path = raw["aflw"]["dir"], raw["aflw"]["mat"]
    data = bytearray(_save_v5(_aflw_variables(raw)))
    data[128 + offset] = value  # bbox is the first variable, right after the 128-byte header
    with replaced({path: bytes(data)}):
        with pytest.raises(DataFormatError, match=rf"{re.escape(str(path))}: byte \d+: .*{phrase}"):
            read_records("aflw", root, part="train", split_point=2)


@fuzz(30)
@given(data=st.data())
def test_aflw_skips_exactly_the_broken_faces(raw: dict[str, Any], data: st.DataObject) -> None:
    root, path = raw["aflw"]["dir"], raw["aflw"]["mat"]
    spec = {"train": {"part": "train", "split_point": 2}, "test": {"part": "test", "split_point": 2}}
    seed = {part: read_records("aflw", root, **kw) for part, kw in spec.items()}
    v = _aflw_variables(raw)
    broken = data.draw(st.sets(st.integers(0, len(v["bbox"]) - 1)))
    for row in broken:
        kind = data.draw(st.sampled_from(["data", "bbox", "empty_box", "name_number", "name_missing"]))
        if kind == "data":
            v["data"][row, data.draw(st.integers(0, 37))] = data.draw(st.sampled_from([math.nan, math.inf]))
        elif kind == "bbox":
            v["bbox"][row, data.draw(st.integers(0, 3))] = -math.inf
        elif kind == "empty_box":
            v["bbox"][row, 1] = v["bbox"][row, 0]  # x_max = x_min
        elif kind == "name_number":
            v["nameList"][row, 0] = 3.0
        else:
            v["nameList"][row, 0] = "0/missing.jpg"
    with replaced({path: _save_v5(v)}):
        for part, kw in spec.items():
            bad = BadInput("skip", what="train")
            records = read_records("aflw", root, bad=bad, **kw)
            expected = [r for r in seed[part] if r.attributes["index"] - 1 not in broken]
            assert len(bad.skipped) == len(seed[part]) - len(expected), bad.skipped
            assert all(f"{path}: face " in m for m in bad.skipped)
            same_faces(records, expected)


def _cofw_variables(raw: dict[str, Any]) -> dict[str, Any]:
    part = raw["cofw"]["train"]
    return {"IsTr": list(part["images"]), "bboxesTr": part["boxes"].copy(), "phisTr": part["phis"].copy()}


def _v73_bytes(variables: dict[str, Any], scratch: Path) -> bytes:
    write_mat_v73(scratch, variables)
    return scratch.read_bytes()


HOSTILE_IMAGES = (
    np.zeros((0, 0), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((2, 3, 3, 1), np.uint8),
    np.full((6, 6), np.nan), np.zeros((6, 6), np.float64) + 1e300, "not an image", np.zeros((1, 9), np.int16),
)  # fmt: skip


@st.composite
def mutated_cofw(draw: st.DrawFn, variables: dict[str, Any], scratch: Path) -> bytes:
    kind = draw(st.sampled_from(["box", "phis", "image", "shape", "count", "class", "delete", "bytes"]))
    v = {
        "IsTr": list(variables["IsTr"]),
        "bboxesTr": variables["bboxesTr"].copy(),
        "phisTr": variables["phisTr"].copy(),
    }
    n = len(v["IsTr"])
    if kind in ("box", "phis"):
        key = "bboxesTr" if kind == "box" else "phisTr"
        v[key][draw(st.integers(0, n - 1)), draw(st.integers(0, v[key].shape[1] - 1))] = _hostile_number(draw)
    elif kind == "image":
        v["IsTr"][draw(st.integers(0, n - 1))] = draw(st.sampled_from(HOSTILE_IMAGES))
    elif kind == "shape":
        key = draw(st.sampled_from(["bboxesTr", "phisTr"]))
        v[key] = draw(st.sampled_from([v[key][:, :3], v[key][:, :58], v[key].T, v[key][:, :0]]))
    elif kind == "count":
        key = draw(st.sampled_from(["IsTr", "bboxesTr", "phisTr"]))
        v[key] = v[key][:-1]
    elif kind == "class":
        v[draw(st.sampled_from(["IsTr", "bboxesTr", "phisTr"]))] = draw(
            st.sampled_from(["text", np.ones((n, 4), bool), [np.zeros((n, 4))]])
        )
    elif kind == "delete":
        del v[draw(st.sampled_from(["IsTr", "bboxesTr", "phisTr"]))]
    data = _v73_bytes(v, scratch)
    if kind == "bytes":
        data = draw(mutated_bytes(data))
    return data


def assert_images_load(records: list[FaceRecord]) -> None:
    """Each record's image loads as (H, W, 3) uint8 or raises a DataFormatError naming its source."""
    for r in records:
        try:
            image = r.image.load()
        except Exception as err:  # noqa: BLE001
            assert isinstance(err, DataFormatError), f"{type(err).__name__} leaked: {err}"
            assert str(r.image.path) in str(err)
        else:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@fuzz(40)
@given(data=st.data())
def test_cofw_any_mutation(
    raw: dict[str, Any], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root, path = raw["cofw"]["dir"], raw["cofw"]["train"]["mat"]
    scratch = tmp_path_factory.getbasetemp() / "cofw_scratch.mat"
    mutated = data.draw(mutated_cofw(_cofw_variables(raw), scratch))
    with replaced({path: mutated}):
        result = read_both(
            lambda bad: read_records("cofw", root, bad=bad, mat=path.name, part="train"), path, False
        )
        if result is not None:
            records, bad = result
            assert_records(records, 29)
            assert len(records) + len(bad.skipped) == len(raw["cofw"]["train"]["images"])
            assert_images_load(records)


@pytest.mark.parametrize("cut", [0, 600, 3000])
def test_cofw_truncated_v73_file_names_the_file(raw: dict[str, Any], cut: int) -> None:
    root, path = raw["cofw"]["dir"], raw["cofw"]["train"]["mat"]
    with replaced({path: path.read_bytes()[: 512 + cut]}):  # was OSError from h5py
        with pytest.raises(DataFormatError, match=re.escape(f"{path}: could not read this MATLAB v7.3")):
            read_records("cofw", root, mat=path.name, part="train")


def test_cofw_text_in_place_of_an_image_fails_to_load_clearly(tmp_path: Path) -> None:
    path = tmp_path / "COFW_train_color.mat"
    write_mat_v73(path, {"IsTr": ["not an image", np.zeros((0, 0), np.uint8)]})
    with pytest.raises(DataFormatError, match=re.escape(f"{path} IsTr{{1}}: expected an image of numbers")):
        MatCellImage(path, "IsTr", 0).load()  # was numpy's UFuncTypeError (a TypeError)
    with pytest.raises(DataFormatError, match=re.escape(f"{path} IsTr{{2}}: expected a gray or 3-channel")):
        MatCellImage(path, "IsTr", 1).load()


@fuzz(20)
@given(data=st.data())
def test_cofw_skips_exactly_the_broken_entries(
    raw: dict[str, Any], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root, path = raw["cofw"]["dir"], raw["cofw"]["train"]["mat"]
    seed = read_records("cofw", root, mat=path.name, part="train")
    v = _cofw_variables(raw)
    broken = data.draw(st.sets(st.integers(0, len(v["IsTr"]) - 1)))
    for i in broken:
        kind = data.draw(st.sampled_from(["box_nan", "box_size", "phis", "image_empty", "image_channels"]))
        if kind == "box_nan":
            v["bboxesTr"][i, data.draw(st.integers(0, 3))] = math.nan
        elif kind == "box_size":
            v["bboxesTr"][i, data.draw(st.integers(2, 3))] = data.draw(st.sampled_from([0.0, -4.0]))
        elif kind == "phis":
            v["phisTr"][i, data.draw(st.integers(0, 57))] = data.draw(st.sampled_from([math.nan, -math.inf]))
        elif kind == "image_empty":
            v["IsTr"][i] = np.zeros((0, 0), np.uint8)
        else:
            v["IsTr"][i] = np.zeros((8, 8, 4), np.uint8)
    scratch = tmp_path_factory.getbasetemp() / "cofw_scratch.mat"
    bad = BadInput("skip", what="train")
    with replaced({path: _v73_bytes(v, scratch)}):
        records = read_records("cofw", root, bad=bad, mat=path.name, part="train")
    assert len(bad.skipped) == len(broken), bad.skipped
    for i, message in zip(sorted(broken), bad.skipped, strict=True):
        assert message.startswith(f"{path}: entry {i + 1} "), message
    same_faces(records, [r for k, r in enumerate(seed) if k not in broken])


COFW68_SPEC = {
    "images_mat": "../COFW/COFW_test_color.mat",
    "bboxes_mat": "cofw68_test_bboxes.mat",
    "annotations_dir": "cofw68_test_annotations",
}


@st.composite
def broken_points_file(draw: st.DrawFn, seed: bytes, scratch: Path) -> bytes | None:
    """A COFW-68 ``<i>_points.mat`` that surely cannot be used: missing, damaged, NaN, wrong shape or key."""
    kind = draw(st.sampled_from(["missing", "truncate", "garbage", "nan", "shape", "key", "text", "v73"]))
    if kind == "missing":
        return None
    if kind == "truncate":
        return seed[: draw(st.integers(0, 1000))]  # inside Points, the first variable
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    if kind == "v73":
        return _v73_bytes({"Points": np.full((68, 2), math.nan)}, scratch)[: draw(st.integers(0, 3000))]
    points = np.ones((68, 2))
    if kind == "nan":
        points[draw(st.integers(0, 67)), draw(st.integers(0, 1))] = draw(
            st.sampled_from([math.nan, math.inf])
        )
        return _save_v5({"Points": points})
    if kind == "shape":
        return _save_v5(
            {"Points": draw(st.sampled_from([points[:67], points.T, points[:, :1], np.ones((0, 0))]))}
        )
    if kind == "key":
        return _save_v5({"points": points})
    return _save_v5({"Points": "sixty-eight"})


@fuzz(30)
@given(data=st.data())
def test_cofw68_skips_exactly_the_broken_entries(
    raw: dict[str, Any], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = raw["cofw68"]["dir"]
    annotations = raw["cofw68"]["annotations_dir"]
    scratch = tmp_path_factory.getbasetemp() / "cofw68_scratch.mat"
    seed = read_records("cofw68", root, **COFW68_SPEC)
    n = len(seed)
    broken = data.draw(st.sets(st.integers(0, n - 1)))
    files: dict[Path, bytes | None] = {}
    boxes = raw["cofw68"]["boxes"].copy()
    for i in broken:
        if data.draw(st.booleans()):
            boxes[i, data.draw(st.integers(2, 3))] = data.draw(st.sampled_from([0, -3]))
        else:
            points_path = annotations / f"{i + 1}_points.mat"
            files[points_path] = data.draw(broken_points_file(points_path.read_bytes(), scratch))
    files[raw["cofw68"]["bboxes_mat"]] = _save_v5({"bboxes": boxes})
    bad = BadInput("skip", what="train")
    with replaced(files):
        records = read_records("cofw68", root, bad=bad, **COFW68_SPEC)
    assert len(bad.skipped) == len(broken), bad.skipped
    for i, message in zip(sorted(broken), bad.skipped, strict=True):
        assert f"{i + 1}_points.mat (entry {i + 1}," in message, message
    same_faces(records, [r for k, r in enumerate(seed) if k not in broken])


@fuzz(30)
@given(data=st.data())
def test_cofw68_any_mutation_of_the_box_file(raw: dict[str, Any], data: st.DataObject) -> None:
    root, path = raw["cofw68"]["dir"], raw["cofw68"]["bboxes_mat"]
    boxes = raw["cofw68"]["boxes"]
    variables = data.draw(
        st.sampled_from(
            [
                {"bboxes": boxes[:1]}, {"bboxes": boxes[:, :3]}, {"bboxes": boxes.T}, {"bboxes": "text"},
                {"boxes": boxes}, {"bboxes": boxes.astype(np.float64) + np.nan}, {"bboxes": boxes * 1e300},
                {"bboxes": np.full_like(boxes, np.iinfo(np.int16).max)}, {"bboxes": -boxes},
            ]
        )
    )  # fmt: skip
    mutated = _save_v5(variables)
    if data.draw(st.booleans()):
        mutated = data.draw(mutated_bytes(mutated))
    with replaced({path: mutated}):
        result = read_both(lambda bad: read_records("cofw68", root, bad=bad, **COFW68_SPEC), path, False)
    if result is not None:
        records, bad = result
        assert_records(records, 68)
        assert len(records) + len(bad.skipped) == len(boxes)


# ---------------------------------------------------------------------------------------------------------
# Referenced images: not images, 0 x 0, 1 x N, huge headers; and the crop cache's skip count for them


def _png(width: int, height: int, pixels: bytes = b"") -> bytes:
    """A PNG whose header says ``width`` x ``height`` RGB pixels (the data need not match)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def _encoded(array: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, array)
    assert ok
    return buffer.tobytes()


BROKEN_IMAGE_KINDS = (
    "empty", "garbage", "text", "truncated", "png_0x0", "png_huge", "png_no_pixels", "jpeg_huge_header",
    "one_row", "one_column",
)  # fmt: skip


@st.composite
def broken_image(draw: st.DrawFn, valid: bytes) -> bytes:
    """Image bytes no face can be cropped from (not decodable, or a single row / column of pixels)."""
    kind = draw(st.sampled_from(BROKEN_IMAGE_KINDS))
    if kind == "empty":
        return b""
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=100))
    if kind == "text":
        return b"version: 1\nn_points: 68\n{\n"
    if kind == "truncated":
        return valid[: draw(st.integers(0, min(len(valid) - 1, 200)))]
    if kind == "png_0x0":
        return _png(0, 0)
    if kind == "png_huge":
        return _png(draw(st.sampled_from([100_000, 2**31 - 1])), draw(st.sampled_from([100_000, 2**31 - 1])))
    if kind == "png_no_pixels":
        return _png(draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    if kind == "jpeg_huge_header":
        return b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    shape = (1, draw(st.integers(1, 64)), 3) if kind == "one_row" else (draw(st.integers(1, 64)), 1, 3)
    return _encoded(np.full(shape, 128, np.uint8), ".png")


@fuzz(40)
@given(data=st.data())
def test_image_sources_decode_or_name_the_file(raw: dict[str, Any], data: st.DataObject) -> None:
    path = next((raw["300w"] / "afw").glob("*.jpg"))
    mutated = data.draw(st.one_of(broken_image(path.read_bytes()), mutated_bytes(path.read_bytes())))
    with replaced({path: mutated}):
        assert_images_load([FaceRecord("face", FileImage(path), rule=None)])


def test_image_with_a_huge_header_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png(100_000, 100_000))
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: could not decode")):  # was cv2.error
        FileImage(path).load()
    with pytest.raises(DataFormatError, match="image not found"):  # was OSError: file name too long
        FileImage(tmp_path / ("9" * 400 + ".png")).load()


@fuzz(15)
@given(data=st.data())
def test_cache_skips_exactly_the_faces_whose_image_is_broken(
    raw: dict[str, Any], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    records = read_records("300w", raw["300w"], folders=["afw", "helen/trainset"])
    broken = data.draw(st.sets(st.sampled_from([r.name for r in records])))
    files = {
        r.image.path: data.draw(broken_image(r.image.path.read_bytes())) for r in records if r.name in broken
    }
    cache_dir = tmp_path_factory.mktemp("cache")
    bad = BadInput("skip", what="train")
    with replaced(files):
        prepare_split(records, cache_dir, 16, bad=bad, workers=1, progress=False)
    assert len(bad.skipped) == len(broken), bad.skipped
    split = read_split(cache_dir)
    assert split.names == [r.name for r in records if r.name not in broken]
    shutil.rmtree(cache_dir)


# ---------------------------------------------------------------------------------------------------------
# The crop cache's own files and the pseudo-label folder

CACHE_FILES = ("annotations.txt", "boxes.txt", "attributes.jsonl", "manifest.json")


@pytest.fixture(scope="module")
def cache_dir(raw: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = read_records("300w", raw["300w"], folders=["afw", "helen/trainset"])
    return prepare_split(records, tmp_path_factory.mktemp("split"), 16, workers=1, progress=False)


def assert_split(split: CachedSplit) -> None:
    """Lengths that agree, finite boxes and landmarks, a dict of attributes per face."""
    n = len(split.names)
    assert len(split.image_paths) == n and split.boxes_xywh.shape == (n, 4)
    assert len(split.attributes) == n and all(isinstance(a, dict) for a in split.attributes)
    assert np.isfinite(split.boxes_xywh).all(), split.boxes_xywh
    if split.landmarks is not None and n:
        assert split.landmarks.shape[:1] == (n,) and np.isfinite(split.landmarks).all()


@fuzz(60)
@given(data=st.data())
def test_cache_files_any_mutation(cache_dir: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(CACHE_FILES))
    path = cache_dir / name
    seed = path.read_bytes()
    if name.endswith((".json", ".jsonl")) and data.draw(st.booleans()):
        mutated = data.draw(mutated_jsonl_values(seed))
    else:
        mutated = data.draw(mutated_text(seed))
    with replaced({path: mutated}):
        try:
            split = read_split(cache_dir)
        except FileNotFoundError as err:
            assert name == "manifest.json" and "manifest.json" in str(err)
            return
        except Exception as err:  # noqa: BLE001
            assert_names_folder_file(err, cache_dir, name)
            return
    assert_split(split)


@st.composite
def mutated_jsonl_values(draw: st.DrawFn, seed: bytes) -> bytes:
    """A JSON (lines) file with one value of one line replaced by a hostile JSON value."""
    lines = seed.splitlines(keepends=True) if not seed.lstrip().startswith(b"{\n") else [seed]
    i = draw(st.integers(0, len(lines) - 1))
    entry = json.loads(lines[i])
    if isinstance(entry, dict) and entry and draw(st.booleans()):
        entry[draw(st.sampled_from(sorted(entry)))] = draw(JSON_VALUES)
    else:
        entry = draw(JSON_VALUES)
    lines[i] = json.dumps(entry).encode() + b"\n"
    return b"".join(lines)


@pytest.mark.parametrize(
    ("name", "change", "line"),
    [
        ("boxes.txt", lambda data: data + b"caf\xe9 1 2 3 4\n", 5),  # was UnicodeDecodeError
        ("annotations.txt", lambda data: data.decode().encode("utf-16"), 1),  # was UnicodeDecodeError
        ("attributes.jsonl", lambda data: data + b'{"attributes": {}}\n', 5),  # was KeyError
        ("attributes.jsonl", lambda data: data + b"[1, 2]\n", 5),  # was AttributeError
        ("attributes.jsonl", lambda data: data + b"7\n", 5),  # was AttributeError
        ("attributes.jsonl", lambda data: data + b'{"name": [1], "attributes": {}}\n', 5),  # was TypeError
        # a NaN box: was read as a box
        ("boxes.txt", lambda data: data.split()[0] + b" nan 0 inf 4\n" + data.split(b"\n", 1)[1], 1),
    ],
)
def test_cache_file_regressions_name_file_and_line(
    cache_dir: Path, name: str, change: Callable[[bytes], bytes], line: int
) -> None:
    """Inputs on which cache.py's readers leaked a bare exception or returned a NaN box (fixed there)."""
    path = cache_dir / name
    with replaced({path: change(path.read_bytes())}):
        with pytest.raises(DataFormatError, match=re.escape(f"{path}:{line}: ")):
            read_split(cache_dir)


@pytest.fixture(scope="module")
def pseudo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    names = ["face_1", "face_2", "face_3"]
    return write_pseudo_labels(
        tmp_path_factory.mktemp("pseudo"),
        names,
        rng.random((3, 5, 2)),
        rng.random(3),
        {"round": 1, "task": "t"},
    )


@fuzz(60)
@given(data=st.data())
def test_pseudo_labels_any_mutation(pseudo_dir: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["annotations.txt", "scores.txt", "manifest.json"]))
    path = pseudo_dir / name
    seed = path.read_bytes()
    if name == "manifest.json" and data.draw(st.booleans()):
        mutated = data.draw(mutated_jsonl_values(seed))
    else:
        mutated = data.draw(mutated_text(seed))
    with replaced({path: mutated}):
        try:
            labels = read_pseudo_labels(pseudo_dir)
        except FileNotFoundError as err:
            assert name == "manifest.json" and "manifest.json" in str(err)
            return
        except Exception as err:  # noqa: BLE001
            assert_names_folder_file(err, pseudo_dir, name)
            return
    n = len(labels.names)
    assert len(set(labels.names)) == n, labels.names
    assert labels.landmarks.shape[0] == n and np.isfinite(labels.landmarks).all()
    assert labels.scores.shape == (n,) and np.isfinite(labels.scores).all()
    assert labels.manifest.get("count") is None or labels.manifest["count"] == n


@pytest.mark.parametrize(
    ("name", "change", "phrase"),
    [
        ("manifest.json", lambda text: text.replace('"count": 3', '"count": "three"'), "says count 'three'"),
        ("manifest.json", lambda text: text.replace('"count": 3', '"count": [3]'), "says count [3]"),
        ("scores.txt", lambda text: text.replace(text.split()[1], "nan", 1), "scores.txt:1: expected"),
        (
            "annotations.txt",
            lambda text: text.replace("face_2", "face_1"),
            "annotations.txt:2: a second line",
        ),
    ],
)
def test_pseudo_label_regressions(
    pseudo_dir: Path, name: str, change: Callable[[str], str], phrase: str
) -> None:
    """A count that is not a number (was ValueError / TypeError), a NaN score and a crop on two lines (were
    read as if fine)."""
    path = pseudo_dir / name
    with replaced({path: change(path.read_text()).encode()}):
        with pytest.raises(DataFormatError, match=re.escape(phrase)):
            read_pseudo_labels(pseudo_dir)
