"""The crop cache on 300W records: files written, cache hits that read no pixels, rebuilds, bad samples."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipnet_lit import files as files_module
from pipnet_lit.datasets import cache as cache_module
from pipnet_lit.datasets import records as records_module
from pipnet_lit.datasets.cache import (
    CACHE_VERSION,
    format_annotation_line,
    manifest_matches,
    prepare_split,
    read_annotations,
    read_manifest,
    read_split,
    write_manifest,
)
from pipnet_lit.datasets.geometry import CropBox, clamp_box, crop_and_resize
from pipnet_lit.datasets.pts import read_pts, write_pts
from pipnet_lit.datasets.readers.w300 import crop_300w, read_300w
from pipnet_lit.datasets.records import BadInput, DataFormatError, FaceRecord, load_image_bgr
from pipnet_lit.files import atomic_write

FOLDERS = ["afw", "helen/trainset"]
NAMES = ["afw_a", "afw_b", "helen_trainset_c"]
FILES = ["afw/a.jpg", "afw/b.png", "helen/trainset/c.png"]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Three small faces in the 300W layout (one of them a grayscale PNG)."""
    rng = np.random.default_rng(5)
    root = tmp_path / "300W"
    sizes = {"afw/a.jpg": (60, 50), "afw/b.png": (48, 56), "helen/trainset/c.png": (64, 64)}
    for rel, (w, h) in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (h // 4, w // 4) if rel == "afw/b.png" else (h // 4, w // 4, 3)
        cv2.imwrite(str(path), cv2.resize(rng.integers(0, 256, shape, dtype=np.uint8), (w, h)))
        pts = np.stack([rng.uniform(5.2, w - 8.7, 5), rng.uniform(4.6, h - 6.3, 5)], axis=1)
        write_pts(path.with_suffix(".pts"), pts)
    return root


def _records(root: Path, folders=FOLDERS, **spec) -> list[FaceRecord]:
    return read_300w(root, folders=folders, bad=BadInput("raise"), **spec)


def _prepare(records, cache_dir: Path, size: int = 32, **kwargs) -> Path:
    return prepare_split(records, cache_dir, size, progress=False, workers=2, **kwargs)


@pytest.fixture()
def crops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spy on the cache's crop function: the source images it crops, one entry per crop."""
    calls: list[str] = []

    def spy(image, box, input_size):
        calls.append(f"{image.shape[1]}x{image.shape[0]}")
        return crop_and_resize(image, box, input_size)

    monkeypatch.setattr(cache_module, "crop_and_resize", spy)
    return calls


def _snapshot(cache_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(cache_dir).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(cache_dir.rglob("*"))
        if p.is_file()
    }


# -- what a build writes -----------------------------------------------------------------------------------
def test_files_written_and_read_back(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []

    def recording_write(path, write, **kwargs):
        written.append(Path(path).name)
        return atomic_write(path, write, **kwargs)

    # every state file goes through pipnet_lit.files.atomic_write (temp file + rename)
    monkeypatch.setattr(files_module, "atomic_write", recording_write)
    cache = tmp_path / "cache"
    params = {"root": root, "scale": np.float64(1.1), "folders": tuple(FOLDERS)}
    records = _records(root)
    assert _prepare(records, cache, 24, description="300w train", params=params) == cache
    # Each crop, then the text files, the manifest last: an interrupted build never leaves a manifest behind.
    crops = sorted(written[: len(NAMES)])
    assert crops == [f"{n}.png" for n in NAMES]
    assert written[len(NAMES) :] == ["annotations.txt", "boxes.txt", "attributes.jsonl", "manifest.json"]
    written = written[len(NAMES) :]
    assert sorted(p.name for p in cache.iterdir()) == sorted([*written, "images"])
    assert sorted(p.name for p in (cache / "images").iterdir()) == [f"{n}.png" for n in NAMES]

    expected = []
    for name, rel in zip(NAMES, FILES, strict=True):
        image = load_image_bgr(root / rel)
        crop, lms, box = crop_300w(image, read_pts((root / rel).with_suffix(".pts")), 24)
        np.testing.assert_array_equal(cv2.imread(str(cache / "images" / f"{name}.png")), crop)  # lossless
        expected.append((name, lms, box))
    ann_lines = (cache / "annotations.txt").read_text().splitlines()
    assert ann_lines == [
        name + " " + " ".join(repr(v) for v in lms.reshape(-1).tolist()) for name, lms, _ in expected
    ]
    assert (cache / "boxes.txt").read_text().splitlines() == [
        f"{name} {float(box[0])!r} {float(box[1])!r} {float(box[2])!r} {float(box[3])!r}"
        for name, _, box in expected
    ]
    assert [json.loads(line) for line in (cache / "attributes.jsonl").read_text().splitlines()] == [
        {"name": "afw_a", "attributes": {"folder": "afw"}},
        {"name": "afw_b", "attributes": {"folder": "afw"}},
        {"name": "helen_trainset_c", "attributes": {"folder": "helen/trainset"}},
    ]
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["cache_version"] == CACHE_VERSION and manifest["input_size"] == 24
    assert manifest["count"] == manifest["count_in"] == 3 and manifest["labeled"] is True
    assert manifest["skipped"] == [] and manifest["names_skipped"] == []
    assert manifest["description"] == "300w train"
    assert manifest["params"] == {"root": root.as_posix(), "scale": 1.1, "folders": FOLDERS}
    assert not [p for p in cache.rglob("*") if "tmp" in p.name]

    split = read_split(cache)
    assert len(split) == 3 and split.cache_dir == cache and split.names == NAMES
    assert split.image_paths == [cache / "images" / f"{n}.png" for n in NAMES]
    assert split.landmarks.shape == (3, 5, 2) and split.landmarks.dtype == np.float64
    for i, (_, lms, box) in enumerate(expected):
        np.testing.assert_array_equal(split.landmarks[i], lms)  # bit-exact through the text file
        assert split.boxes[i].tolist() == list(box)
    assert split.boxes.dtype == np.float64 and split.boxes.shape == (3, 4)
    assert split.attributes == [{"folder": "afw"}, {"folder": "afw"}, {"folder": "helen/trainset"}]
    picked = split.select([2, 0])
    assert picked.names == ["helen_trainset_c", "afw_a"]
    assert picked.image_paths == [split.image_paths[2], split.image_paths[0]]
    np.testing.assert_array_equal(picked.landmarks, split.landmarks[[2, 0]])
    np.testing.assert_array_equal(picked.boxes, split.boxes[[2, 0]])
    assert picked.attributes == [split.attributes[2], split.attributes[0]]


# -- cache hits and rebuilds -------------------------------------------------------------------------------
def test_cache_hit_reads_no_pixels(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    _prepare(_records(root), cache)
    before = _snapshot(cache)

    def boom(*args, **kwargs):
        raise AssertionError("cache hit expected: no image may be read or cropped")

    with monkeypatch.context() as m:
        m.setattr(cache_module, "crop_and_resize", boom)
        m.setattr(records_module.FileImage, "load", boom)
        m.setattr(records_module.cv2, "imread", boom)
        # Freshly read records (new objects, same files) are a hit ...
        assert _prepare(_records(root), cache) == cache
        # ... and so is the same download moved elsewhere (image identities are relative to the root).
        moved = tmp_path / "moved"
        shutil.copytree(root, moved)
        assert _prepare(_records(moved), cache) == cache
    assert _snapshot(cache) == before  # nothing rewritten, not even the manifest
    # The spy must be able to fail: a real rebuild reads the pixels.
    with monkeypatch.context() as m:
        m.setattr(records_module.FileImage, "load", boom)
        with pytest.raises(AssertionError, match="cache hit expected"):
            _prepare(_records(root), cache, 40)


def test_rebuilds_when_anything_the_crops_depend_on_changes(
    root: Path, tmp_path: Path, crops: list[str]
) -> None:
    cache = tmp_path / "cache"
    ann = cache / "annotations.txt"
    _prepare(_records(root), cache)
    assert len(crops) == 3
    first, first_boxes = ann.read_bytes(), (cache / "boxes.txt").read_bytes()

    # Another input size: new crops, the same normalized numbers and boxes.
    crops.clear()
    _prepare(_records(root), cache, 40)
    assert len(crops) == 3
    assert cv2.imread(str(cache / "images/afw_b.png")).shape == (40, 40, 3)
    assert ann.read_bytes() == first and (cache / "boxes.txt").read_bytes() == first_boxes
    assert json.loads((cache / "manifest.json").read_text())["input_size"] == 40

    # Another scale (a field of the box rule): other numbers.
    crops.clear()
    _prepare(_records(root, scale=1.3), cache, 40)
    assert len(crops) == 3 and ann.read_bytes() != first
    assert (cache / "boxes.txt").read_bytes() != first_boxes
    # The subpixel option is part of the rule too.
    crops.clear()
    before = ann.read_bytes()
    _prepare(_records(root, scale=1.3, subpixel=True), cache, 40)
    assert len(crops) == 3 and ann.read_bytes() != before

    # Edited landmarks rebuild: an interior point moves, the box stays.
    pts_path = root / "afw/b.pts"
    edited = read_pts(pts_path)
    edited[2] = edited.min(axis=0) + 1.5
    write_pts(pts_path, edited)
    crops.clear()
    before = ann.read_text().splitlines()
    _prepare(_records(root, scale=1.3, subpixel=True), cache, 40)
    after = ann.read_text().splitlines()
    assert len(crops) == 3
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]

    # Another image file (the identity is the relative path and the byte size) rebuilds.
    image_path = root / "helen/trainset/c.png"
    size = image_path.stat().st_size
    cv2.imwrite(str(image_path), np.ascontiguousarray(load_image_bgr(image_path)[:, :-2]))
    assert image_path.stat().st_size != size
    crops.clear()
    _prepare(_records(root, scale=1.3, subpixel=True), cache, 40)
    assert len(crops) == 3

    # A deleted crop is noticed, and so is an unreadable manifest.
    os.remove(cache / "images/afw_b.png")
    crops.clear()
    _prepare(_records(root, scale=1.3, subpixel=True), cache, 40)
    assert len(crops) == 3 and (cache / "images/afw_b.png").is_file()
    (cache / "manifest.json").write_text("{not json")
    crops.clear()
    _prepare(_records(root, scale=1.3, subpixel=True), cache, 40)
    assert len(crops) == 3 and read_manifest(cache / "manifest.json")["count"] == 3
    # And after all that, the same call is a hit again.
    crops.clear()
    _prepare(_records(root, scale=1.3, subpixel=True), cache, 40)
    assert crops == []


def test_stale_crops_are_dropped(root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _prepare(_records(root), cache)
    (cache / "images/stray.png").write_bytes(b"x")
    (cache / "images/old_folder").mkdir()
    (cache / "images/old_folder/x.png").write_bytes(b"x")
    _prepare(_records(root, folders=["helen/trainset"]), cache)
    assert sorted(p.name for p in (cache / "images").iterdir()) == ["helen_trainset_c.png"]
    split = read_split(cache)
    assert split.names == ["helen_trainset_c"] and len(split.boxes) == 1


def test_interrupted_build_is_not_a_hit(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crops: list[str]
) -> None:
    cache = tmp_path / "cache"
    _prepare(_records(root), cache)

    def interrupted(path, text):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(cache_module, "atomic_write_text", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _prepare(_records(root), cache, 40)
    assert not (cache / "manifest.json").exists()  # the old manifest went before the first new crop
    with pytest.raises(FileNotFoundError, match=r"not a prepared crop cache .*run prepare_data first"):
        read_split(cache)
    crops.clear()
    _prepare(_records(root), cache, 40)
    assert len(crops) == 3 and len(read_split(cache)) == 3


# -- bad samples -------------------------------------------------------------------------------------------
def test_unreadable_image_is_skipped_and_reported_again_on_a_hit(
    root: Path, tmp_path: Path, crops: list[str]
) -> None:
    (root / "afw/b.png").write_text("not an image")
    cache = tmp_path / "cache"
    bad = BadInput("skip", what="train")
    _prepare(_records(root), cache, bad=bad)
    assert len(bad.skipped) == 1
    message = bad.skipped[0]
    # Which face (its annotation file) and which file could not be read.
    assert message.startswith(str(root / "afw/b.pts") + ": ")
    assert f"{root / 'afw/b.png'}: could not decode the image" in message
    split = read_split(cache)
    assert split.names == ["afw_a", "helen_trainset_c"] and split.landmarks.shape == (2, 5, 2)
    assert [a["folder"] for a in split.attributes] == ["afw", "helen/trainset"]
    manifest = read_manifest(cache / "manifest.json")
    assert manifest["skipped"] == [message] and manifest["names_skipped"] == ["afw_b"]
    assert manifest["count"] == 2 and manifest["count_in"] == 3
    assert not (cache / "images/afw_b.png").exists()

    # A cache hit (nothing cropped) reports the same message again ...
    crops.clear()
    again = BadInput("skip")
    _prepare(_records(root), cache, bad=again)
    assert crops == [] and again.skipped == [message]
    # ... and raises it in raise mode.
    with pytest.raises(DataFormatError, match="could not decode the image"):
        _prepare(_records(root), cache, bad=BadInput("raise"))
    assert crops == []

    # A fresh build in raise mode names the file and leaves no manifest.
    with pytest.raises(DataFormatError, match=r"afw/b\.png: could not decode the image") as info:
        _prepare(_records(root), tmp_path / "strict")
    assert "bad_input.eval=skip" in str(info.value)
    assert not (tmp_path / "strict/manifest.json").exists()


def test_missing_image_and_empty_box_are_bad_samples(root: Path, tmp_path: Path) -> None:
    records = _records(root)
    (root / "afw/a.jpg").unlink()  # deleted after reading the records
    outside = dataclasses.replace(records[2], points=np.array([[500.0, 5.0], [510.0, 9.0]]))
    bad = BadInput("skip")
    _prepare([records[0], records[1], outside], tmp_path / "cache", bad=bad)
    assert len(bad.skipped) == 2
    assert "image not found" in bad.skipped[0] and "a.jpg" in bad.skipped[0]
    assert (
        bad.skipped[1].startswith(str(root / "helen/trainset/c.pts")) and "empty face box" in bad.skipped[1]
    )
    assert read_split(tmp_path / "cache").names == ["afw_b"]


def test_duplicate_names_are_refused(root: Path, tmp_path: Path) -> None:
    records = _records(root)
    twin = dataclasses.replace(records[2], name="afw_b")
    with pytest.raises(DataFormatError, match="two faces of 300w train share the crop name 'afw_b'"):
        _prepare([*records[:2], twin], tmp_path / "cache", description="300w train")
    with pytest.raises(DataFormatError, match=r"two faces of .*cache share the crop name 'afw_b'"):
        _prepare([*records[:2], twin], tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# -- unlabeled faces ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GivenBox:
    """Test rule: the record's (x0, y0, x1, y1) box clamped to the image, no landmarks."""

    def apply(self, points, box, image_w, image_h):
        return clamp_box(*box, image_w, image_h), None


def test_unlabeled_records(root: Path, tmp_path: Path) -> None:
    given = [(2.25, 3.1, 40.0, 45.55), (-4.0, 1.0, 30.0, 80.0), (10.0, 10.0, 50.0, 50.0)]
    records = [
        dataclasses.replace(r, points=None, box=b, rule=GivenBox())
        for r, b in zip(_records(root), given, strict=True)
    ]
    cache = _prepare(records, tmp_path / "cache", 16)
    assert (cache / "annotations.txt").read_text() == "".join(f"{n}\n" for n in NAMES)
    assert read_annotations(cache / "annotations.txt", allow_unlabeled=True) == [(n, None) for n in NAMES]
    assert read_manifest(cache / "manifest.json")["labeled"] is False
    split = read_split(cache)
    assert split.names == NAMES and split.landmarks is None
    # (-4, 1, 30, 80) in a 48 x 56 image clamps to (0, 1, 30, 55).
    # Float boxes are stored at full precision: 45.55 - 3.1 is 42.449999999999996.
    assert split.boxes.tolist() == [[2.25, 3.1, 37.75, 45.55 - 3.1], [0, 1, 30, 54], [10, 10, 40, 40]]
    assert (cache / "boxes.txt").read_text().splitlines()[0] == "afw_a 2.25 3.1 37.75 42.449999999999996"
    for name, rel, box in zip(NAMES, FILES, split.boxes, strict=True):
        image = load_image_bgr(root / rel)
        expected = crop_and_resize(image, CropBox(box[0], box[1], box[0] + box[2], box[1] + box[3]), 16)
        np.testing.assert_array_equal(cv2.imread(str(cache / "images" / f"{name}.png")), expected)

    # Labeled and unlabeled faces do not mix in one split.
    mixed = [_records(root)[0], *records[1:]]
    cache = _prepare(mixed, tmp_path / "mixed", 16)
    with pytest.raises(
        DataFormatError, match=r"annotations\.txt: mixes labeled and unlabeled lines \(afw_b\)"
    ):
        read_split(cache)


def test_empty_splits(root: Path, tmp_path: Path) -> None:
    split = read_split(_prepare([], tmp_path / "none"))
    assert len(split) == 0 and split.names == [] and split.boxes.shape == (0, 4)
    # Labeled faces that were all skipped: still a labeled (empty) split.
    for rel in FILES:
        (root / rel).write_bytes(b"")
    bad = BadInput("skip")
    split = read_split(_prepare(_records(root), tmp_path / "skipped", bad=bad))
    assert len(bad.skipped) == 3 and len(split) == 0
    assert split.landmarks.shape == (0, 0, 2) and split.boxes.shape == (0, 4)


# -- text files --------------------------------------------------------------------------------------------
def test_format_annotation_line_round_trips_full_precision(tmp_path: Path) -> None:
    lms = np.array([[0.1 + 0.2, 1 / 3], [-0.0625, 1.0000000000000002]])
    line = format_annotation_line("face_1", lms)
    assert line == "face_1 0.30000000000000004 0.3333333333333333 -0.0625 1.0000000000000002"
    assert format_annotation_line("face_2", None) == "face_2"
    (tmp_path / "a.txt").write_text(line + "\n")
    ((name, back),) = read_annotations(tmp_path / "a.txt")
    assert name == "face_1"
    np.testing.assert_array_equal(back, lms)


def test_read_annotations_errors(tmp_path: Path) -> None:
    good = tmp_path / "ok.txt"
    good.write_text("a 0.1 0.2 0.3 0.4\n\nb 1 2 3 4\n")
    entries = read_annotations(good)
    assert [n for n, _ in entries] == ["a", "b"]
    np.testing.assert_array_equal(entries[0][1], [[0.1, 0.2], [0.3, 0.4]])
    cases = [
        ("a 0.1 0.2\nb 0.1 0.2 0.3\n", "bad.txt:2:", "even"),
        ("a 0.1 0.2\nb\n", "bad.txt:2:", "non-zero"),
        ("a 0.1 zz\n", "bad.txt:1:", "non-numeric coordinate 'zz' for 'a'"),
        ("a 0.1 nan\n", "bad.txt:1:", "NaN or inf coordinate for 'a'"),
        ("\na 0.1 0.2\nb 0.1 0.2 0.3 0.4\n", "bad.txt:3:", "2 landmarks for 'b', but earlier lines have 1"),
    ]
    bad = tmp_path / "bad.txt"
    for text, where, what in cases:
        bad.write_text(text)
        with pytest.raises(DataFormatError) as info:
            read_annotations(bad)
        assert where in str(info.value) and what in str(info.value), str(info.value)
    # A name alone is an unlabeled face only when asked for.
    bad.write_text("a 0.1 0.2\nb\n")
    names = [(n, None if v is None else v.tolist()) for n, v in read_annotations(bad, allow_unlabeled=True)]
    assert names == [("a", [[0.1, 0.2]]), ("b", None)]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_annotations(tmp_path / "missing.txt")


def test_read_split_errors_name_the_file_and_line(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not a prepared crop cache \(no readable manifest\.json\)"):
        read_split(tmp_path)
    cache = _prepare(_records(root), tmp_path / "cache")
    boxes = (cache / "boxes.txt").read_text().splitlines()
    (cache / "boxes.txt").write_text(f"{boxes[0]}\n{boxes[1]} 7.0\n{boxes[2]}\n")
    with pytest.raises(DataFormatError, match=r"boxes\.txt:2: expected '<name> x0 y0 w h'"):
        read_split(cache)
    (cache / "boxes.txt").write_text(f"{boxes[0]}\n{boxes[2]}\n")
    with pytest.raises(DataFormatError, match=r"boxes\.txt does not match annotations\.txt .*\['afw_b'\]"):
        read_split(cache)
    (cache / "boxes.txt").write_text("\n".join(boxes) + "\n")
    assert len(read_split(cache)) == 3
    lines = (cache / "attributes.jsonl").read_text().splitlines()
    (cache / "attributes.jsonl").write_text(f"{lines[0]}\n{{broken\n")
    with pytest.raises(DataFormatError, match=r"attributes\.jsonl:2: not a JSON object"):
        read_split(cache)
    ann = (cache / "annotations.txt").read_text().splitlines()
    (cache / "annotations.txt").write_text(f"{ann[0]}\n{ann[1]} 0.5\n")
    with pytest.raises(DataFormatError, match=r"annotations\.txt:2:"):
        read_split(cache)


# -- manifests ---------------------------------------------------------------------------------------------
def test_manifest_round_trip(tmp_path: Path) -> None:
    data = {"b": [1, 2.5, "x"], "a": {"nested": True}, "n": None}
    path = write_manifest(tmp_path / "deep/dir/manifest.json", data)
    assert path == tmp_path / "deep/dir/manifest.json"
    assert read_manifest(path) == data
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"') < text.index('"n"')  # sorted keys
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json"]  # no temporary file left
    assert manifest_matches(path, {"a": {"nested": True}, "b": [1, 2.5, "x"], "z": 9}, ["a", "b"])
    assert not manifest_matches(path, {"a": {"nested": False}}, ["a"])
    assert not manifest_matches(path, {"z": 9}, ["z"])
    assert read_manifest(tmp_path / "missing.json") is None
    assert not manifest_matches(tmp_path / "missing.json", {}, [])
    (tmp_path / "broken.json").write_text("{")
    assert read_manifest(tmp_path / "broken.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_manifest(tmp_path / "list.json") is None
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    assert read_manifest(tmp_path / "latin1.json") is None


def test_attribute_called_name_and_deleted_text_files(tmp_path: Path) -> None:
    """An attribute named 'name' cannot clobber the crop name; a missing annotation file rebuilds."""
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), 90, np.uint8))
    record = FaceRecord(
        name="real",
        image=records_module.FileImage(image),
        rule=GivenBox(),
        box=(2.0, 3.0, 30.0, 31.0),
        attributes={"name": "other", "k": 1},
    )
    cache = tmp_path / "cache"
    prepare_split([record], cache, 16, progress=False)
    assert read_split(cache).attributes == [{"name": "other", "k": 1}]
    (cache / "annotations.txt").unlink()
    prepare_split([record], cache, 16, progress=False)  # not a cache hit: the file is rewritten
    assert read_split(cache).names == ["real"]


def test_jobs_sharing_a_data_folder_prepare_it_one_at_a_time(tmp_path):
    """A job that finds the cache locked by another (a multirun, SLURM array jobs) waits, then prepares."""
    import threading

    from pipnet_lit.datasets.cache import exclusive_lock
    from pipnet_lit.datasets.datamodule import LandmarkDataModule
    from pipnet_lit.synthetic import SyntheticFaces

    faces = SyntheticFaces(n_train=2, n_common=1, n_challenge=1, n_wild=0, image_size=64, seed=0)
    dm = LandmarkDataModule(
        meta="synthetic", root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), input_size=64,
        num_workers=0, load_unlabeled=False, sources={"synthetic": faces},
    )  # fmt: skip
    done = threading.Event()
    with exclusive_lock(tmp_path / "cache" / ".prepare.lock"):  # another job is preparing
        worker = threading.Thread(target=lambda: (dm.prepare_data(), done.set()))
        worker.start()
        assert not done.wait(1.5)  # this one waits...
        assert not (tmp_path / "data" / "synthetic").exists()  # ...before rendering anything
    worker.join(120)
    assert done.is_set()
    for split in ("train", "test"):
        assert (tmp_path / "cache" / "synthetic" / f"{split}_64px" / "manifest.json").is_file()
