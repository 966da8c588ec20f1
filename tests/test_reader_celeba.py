"""CelebA unlabeled reader: box-file order, the official asymmetric crop on float boundaries, bad lines."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipnet_lit.datasets.geometry import CropBox, crop_and_resize
from pipnet_lit.datasets.meta import META_DIR
from pipnet_lit.datasets.readers import read_records
from pipnet_lit.datasets.readers.celeba import BoxCelebA, read_celeba
from pipnet_lit.datasets.records import BadInput, DataFormatError, MissingDownloadError
from pipnet_lit.synthetic.raw.celeba import write_celeba_tree

CROP = 40


def official_process_celeba(image_path: Path, bbox: tuple[int, int, int, int], target_size: int):
    """Loop re-implementation of the official CelebA crop (scale 1.2; the top edge moves down)."""
    image = cv2.imread(str(image_path))
    image_height, image_width, _ = image.shape
    xmin, ymin, xmax, ymax = bbox
    width = xmax - xmin + 1
    height = ymax - ymin + 1
    scale = 1.2
    xmin -= width * (scale - 1) / 2
    ymin += height * (scale + 0.1 - 1) / 2
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


def noise_image(rng: np.random.Generator, width: int, height: int, gray: bool = False) -> np.ndarray:
    shape = (height, width) if gray else (height, width, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def test_generator_tree_file_order_and_official_crops(tmp_path):
    info = write_celeba_tree(tmp_path, n_images=8, image_size=72, seed=2)
    records = read_celeba(info["dir"], bad=BadInput("raise"))
    assert info["listed"] != sorted(info["listed"])  # the file is not sorted: its order must be kept
    assert [r.name for r in records] == [Path(name).stem for name in info["listed"]]
    assert {"000003", "000007"}.isdisjoint(r.name for r in records)  # images without a line
    assert len(info["images"]) == 8 and len(records) == 6
    for record in records:
        image_name = record.name + ".jpg"
        assert record.attributes == {"image": image_name}
        assert record.points is None and record.box == info["boxes"][image_name]
        crop, normalized, box = crop_record(record)
        expected_crop, expected_box = official_process_celeba(
            info["dir"] / "img_celeba" / image_name, record.box, CROP
        )
        assert normalized is None
        assert (box.x0, box.y0, box.x1, box.y1) == expected_box
        assert np.array_equal(crop, expected_crop)
    clamped = [r for r in records if r.box[0] < 0]
    assert clamped and crop_record(clamped[0])[2].x0 == 0


def test_asymmetric_crop_on_float_boundaries(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "CelebA"
    (root / "img_celeba").mkdir(parents=True)
    for k, gray in ((1, False), (2, True), (3, False)):
        cv2.imwrite(str(root / "img_celeba" / f"00000{k}.png"), noise_image(rng, 64, 48, gray))
    (root / "celeba_bboxes.txt").write_text(
        "000001.png -24 10 5 29\n"  # w = 30, h = 20: right edge 5 + 30 * (1.2 - 1) / 2 = 7.999999999999999
        "000002.png 10 8 39 37\n"  # w = h = 30: interior box, top moves down by 4.500000000000001
        "000003.png 10 -24 39 5\n"  # h = 30: bottom edge 7.999999999999999
    )
    one, two, three = read_celeba(root, bad=BadInput())
    # x: -24 - 2.999999999999999 -> clamped to 0; x1 = 7.999999999999999 (a rounded 0.1 * w gives 8.0)
    # y: 10 + 20 * 0.30000000000000004 / 2 = 13.0 (moved DOWN); y1 = 29 + 1.9999999999999996 = 31.0
    box = crop_record(one)[2]
    assert box == CropBox(0, 13.0, 7.999999999999999, 31.0)
    assert box.slices() == (slice(13, 31), slice(0, 7))
    assert int(5 + 30 * 0.1) == 8  # what the rounded literal would have cropped
    box = crop_record(two)[2]
    assert box == CropBox(7.000000000000001, 12.5, 42.0, 40.0)  # 8 + 4.500000000000001 = 12.5
    assert box.slices() == (slice(12, 40), slice(7, 42))
    box = crop_record(three)[2]
    assert box == CropBox(7.000000000000001, 0, 42.0, 7.999999999999999)
    assert box.slices() == (slice(0, 7), slice(7, 42))
    for record in (one, two, three):
        crop = crop_record(record)[0]
        expected = official_process_celeba(
            root / "img_celeba" / record.attributes["image"], record.box, CROP
        )[0]
        assert np.array_equal(crop, expected)
    gray_crop = crop_record(two)[0]
    assert np.array_equal(gray_crop[..., 0], gray_crop[..., 2])


def test_rule_fields_are_the_official_factors():
    assert BoxCelebA() == BoxCelebA(1.2, 0.1)
    # h = 100: the top moves down by 100 * (1.2 + 0.1 - 1) / 2 = 15.000000000000002, not 15.0
    box, normalized = BoxCelebA().apply(None, (0, 0, 99, 99), 1000, 1000)
    assert normalized is None
    assert box == CropBox(0, 15.000000000000002, 109.0, 109.0) and box.y0 != 15.0


def test_bad_lines_raise_or_are_skipped(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "CelebA"
    (root / "img_celeba").mkdir(parents=True)
    for k in (1, 2):
        cv2.imwrite(str(root / "img_celeba" / f"00000{k}.jpg"), noise_image(rng, 50, 60))
    box_file = root / "celeba_bboxes.txt"
    box_file.write_text(
        "000001.jpg 5 5 40 50\n"
        "000002.jpg 5 5 40\n"  # 4 fields
        "\n"  # blank lines are ignored
        "000002.jpg 5 5.5 40 50\n"  # not an integer
        "000002.jpg 40 5 5 50\n"  # x_max < x_min
        "000009.jpg 5 5 40 50\n"  # no such image
        "000001.jpg 6 6 41 51\n"  # a second box for the same image
        "000002.jpg 1 2 30 40\n"
    )
    with pytest.raises(DataFormatError, match=rf"{box_file}:2: expected .* got 4 fields"):
        read_celeba(root, bad=BadInput("raise"))
    bad = BadInput("skip")
    records = read_celeba(root, bad=bad)
    assert [(r.name, r.box, r.source) for r in records] == [
        ("000001", (5, 5, 40, 50), f"{box_file}:1"),
        ("000002", (1, 2, 30, 40), f"{box_file}:8"),
    ]
    assert [message.split(": ")[0] for message in bad.skipped] == [f"{box_file}:{n}" for n in (2, 4, 5, 6, 7)]
    assert "000009.jpg not found" in bad.skipped[3] and "first on line 1" in bad.skipped[4]


def test_missing_download_and_yaml(tmp_path):
    info = write_celeba_tree(tmp_path, n_images=2, image_size=64)
    with pytest.raises(MissingDownloadError, match="boxes.txt"):
        read_celeba(info["dir"], bbox_file="boxes.txt", bad=BadInput())
    with pytest.raises(MissingDownloadError, match="CelebA/img_align_celeba"):
        read_celeba(info["dir"], images="img_align_celeba", bad=BadInput())
    meta = yaml.safe_load((META_DIR / "celeba.yaml").read_text())
    assert (meta["format"], meta["dir"], meta["landmarks"]) == ("celeba", "CelebA", "ibug68")
    assert meta["train"] is None and meta["test"] == {} and meta["unlabeled"] == "unlabeled"
    records = read_records(meta["format"], info["dir"], **meta["splits"][meta["unlabeled"]])
    assert [r.name for r in records] == [Path(n).stem for n in info["listed"]] and len(records) == 2
