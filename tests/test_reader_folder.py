"""Generic unlabeled folder reader: whole-image crops, boxes from a text file, names, bad lines."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipnet_lit.datasets.geometry import CropBox, crop_and_resize
from pipnet_lit.datasets.readers import read_records
from pipnet_lit.datasets.readers.folder import ScaledBox, read_folder
from pipnet_lit.datasets.records import BadInput, DataFormatError, MissingDownloadError

CROP = 32


def official_box_crop(image_path: Path, box: tuple[float, ...], scale: float, target_size: int):
    """Loop re-implementation of the box rule (the official WFLW arithmetic): enlarge, clamp, int() bounds."""
    image = cv2.imread(str(image_path))
    image_height, image_width, _ = image.shape
    xmin, ymin, xmax, ymax = box
    width = xmax - xmin
    height = ymax - ymin
    xmin -= width * (scale - 1) / 2
    ymin -= height * (scale - 1) / 2
    xmax += width * (scale - 1) / 2
    ymax += height * (scale - 1) / 2
    xmin, ymin = max(xmin, 0), max(ymin, 0)
    xmax, ymax = min(xmax, image_width - 1), min(ymax, image_height - 1)
    patch = image[int(ymin) : int(ymax), int(xmin) : int(xmax), :]
    return cv2.resize(patch, (target_size, target_size)), (xmin, ymin, xmax, ymax)


def crop_record(record, size: int = CROP):
    image = record.image.load()
    box, normalized = record.rule.apply(record.points, record.box, image.shape[1], image.shape[0])
    return crop_and_resize(image, box, size), normalized, box


@pytest.fixture()
def pool(tmp_path: Path) -> Path:
    """``pool/faces``: images of every suffix (one gray, one upper-case), a subfolder, non-images."""
    rng = np.random.default_rng(0)
    faces = tmp_path / "pool" / "faces"
    (faces / "party").mkdir(parents=True)
    (faces / ".cache").mkdir()
    sizes = {
        "b.png": (40, 30),
        "a.jpg": (36, 50),
        "c.BMP": (20, 20),
        "d.jpeg": (64, 48),
        "party/e.jpg": (30, 44),
    }
    for rel, (w, h) in sizes.items():
        shape = (h, w) if rel == "d.jpeg" else (h, w, 3)
        cv2.imwrite(str(faces / rel), rng.integers(0, 256, shape, dtype=np.uint8))
    cv2.imwrite(str(faces / ".hidden.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(faces / ".cache" / "f.jpg"), np.zeros((8, 8, 3), np.uint8))
    (faces / "notes.txt").write_text("not an image\n")
    return tmp_path / "pool"


def test_whole_images_sorted_with_names_and_full_boxes(pool):
    records = read_folder(pool, images="faces", bad=BadInput())
    assert [r.name for r in records] == ["a", "b", "c", "d"]
    assert [r.attributes["path"] for r in records] == ["a.jpg", "b.png", "c.BMP", "d.jpeg"]
    nested = read_records("folder", pool, images="faces", recursive=True)
    assert [r.name for r in nested] == ["a", "b", "c", "d", "party_e"]
    for record in nested:
        assert record.points is None and record.box is None
        crop, normalized, box = crop_record(record)
        image = cv2.imread(str(pool / "faces" / record.attributes["path"]))
        assert normalized is None
        assert box == CropBox(0, 0, image.shape[1], image.shape[0])
        assert np.array_equal(crop, cv2.resize(image, (CROP, CROP)))
    assert crop_record(nested[0])[2] == CropBox(0, 0, 36, 50)  # width and height not swapped


def test_boxes_file_hand_computed_on_a_float_boundary(pool):
    (pool / "boxes.txt").write_text(
        "# path x_min y_min x_max y_max\n"
        "a.jpg -25 10.5 5 30.5\n"  # w = 30: x1 = 5 + 30 * (1.2 - 1) / 2 = 7.999999999999999
        "\n"
        "d.jpeg 3.25 4 33.25 24\n"
        "a.jpg 1 1 30 40\n"  # a second face in a.jpg
        "party/e.jpg 2 3 25 40\n"
    )
    records = read_folder(pool, images="faces", boxes="boxes.txt", scale=1.2, bad=BadInput())
    assert [r.name for r in records] == ["a_1", "d", "a_2", "party_e"]
    assert [r.source for r in records] == [f"{pool / 'boxes.txt'}:{n}" for n in (2, 4, 5, 6)]
    assert records[0].box == (-25.0, 10.5, 5.0, 30.5)
    box = crop_record(records[0])[2]
    # x0 = -25 - 2.999999999999999 -> 0; y: 10.5 -/+ 2.0 (h = 20); a rounded 0.1 * w would give x1 = 8.0
    assert box == CropBox(0, 8.5, 7.999999999999999, 32.5)
    assert box.slices() == (slice(8, 32), slice(0, 7))
    box = crop_record(records[1])[2]
    assert box == CropBox(0.2500000000000009, 2.0000000000000004, 36.25, 26.0)
    assert box.slices() == (slice(2, 26), slice(0, 36))
    for record in records:
        crop, normalized, box = crop_record(record)
        expected, expected_box = official_box_crop(
            pool / "faces" / record.attributes["path"], record.box, 1.2, CROP
        )
        assert normalized is None and (box.x0, box.y0, box.x1, box.y1) == expected_box
        assert np.array_equal(crop, expected)
    gray = crop_record(records[1])[0]
    assert np.array_equal(gray[..., 0], gray[..., 1])


def test_scale_one_keeps_the_box_and_clamps():
    assert ScaledBox().apply(None, (-2.5, 3.5, 50.25, 20.0), 40, 30) == (CropBox(0, 3.5, 39, 20.0), None)


def test_bad_lines_raise_or_are_skipped(pool):
    box_file = pool / "boxes.txt"
    box_file.write_text(
        "a.jpg 1 1 30 40\n"
        "b.png 1 1 30\n"  # 4 fields
        "b.png 1 one 30 20\n"  # not a number
        "b.png 30 1 1 20\n"  # empty box
        "b.png 1 1 30 nan\n"  # not finite
        "missing.jpg 1 1 30 20\n"  # no such image
        "b.png 1 1 30 20\n"
    )
    with pytest.raises(DataFormatError, match=rf"{box_file}:2: expected .* got 4 fields"):
        read_folder(pool, images="faces", boxes="boxes.txt", bad=BadInput("raise"))
    bad = BadInput("skip")
    records = read_folder(pool, images="faces", boxes="boxes.txt", bad=bad)
    assert [(r.name, r.box) for r in records] == [
        ("a", (1.0, 1.0, 30.0, 40.0)),
        ("b", (1.0, 1.0, 30.0, 20.0)),
    ]
    assert [message.split(": ")[0] for message in bad.skipped] == [f"{box_file}:{n}" for n in range(2, 7)]
    assert "missing.jpg not found" in bad.skipped[-1]


def test_missing_folders_files_and_name_clashes(pool, tmp_path):
    with pytest.raises(MissingDownloadError, match="pool/photos"):
        read_folder(pool, images="photos", bad=BadInput())
    with pytest.raises(MissingDownloadError, match="pool/boxes.txt"):
        read_folder(pool, images="faces", boxes="boxes.txt", bad=BadInput())
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "empty" / "sub" / "x.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(MissingDownloadError, match="no images .* recursive: true"):
        read_folder(tmp_path / "empty", bad=BadInput())
    assert [r.name for r in read_folder(tmp_path / "empty", recursive=True, bad=BadInput())] == ["sub_x"]
    with pytest.raises(ValueError, match="scale=1.3 applies to boxes"):
        read_folder(pool, images="faces", scale=1.3, bad=BadInput())
    cv2.imwrite(str(pool / "faces" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataFormatError, match="both get the crop name 'a'"):
        read_folder(pool, images="faces", bad=BadInput())
