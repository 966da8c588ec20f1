"""COFW and COFW-68 readers: parsed values, names, official crops bit for bit, bad entries, YAML facts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")

from pipnet_lit.datasets.geometry import CropBox, crop_and_resize  # noqa: E402
from pipnet_lit.datasets.meta import META_DIR, load_landmark_scheme  # noqa: E402
from pipnet_lit.datasets.readers import get_reader, read_records  # noqa: E402
from pipnet_lit.datasets.readers import matlab as matlab_module  # noqa: E402
from pipnet_lit.datasets.readers.cofw import CofwBox, read_cofw, read_cofw68  # noqa: E402
from pipnet_lit.datasets.records import BadInput, DataFormatError, MissingDownloadError  # noqa: E402
from pipnet_lit.synthetic.raw.cofw import write_cofw68_tree, write_cofw_tree, write_mat_v73  # noqa: E402

OFFICIAL_COFW_FLIP_1BASED = [
    2, 1, 4, 3, 7, 8, 5, 6, 10, 9, 12, 11, 15, 16, 13, 14, 18, 17, 20, 19, 21, 22, 24, 23, 25, 26, 27, 28, 29,
]  # fmt: skip
KEYS = {"train": ("IsTr", "bboxesTr", "phisTr"), "test": ("IsT", "bboxesT", "phisT")}
SIZE = 64
COFW68_SPEC = {
    "images_mat": "../COFW/COFW_test_color.mat",
    "bboxes_mat": "cofw68_test_bboxes.mat",
    "annotations_dir": "cofw68_test_annotations",
}


# ---------------------------------------------------------------------------------------------------------
# An independent re-implementation of the official preprocessing (lib/preprocess.py process_cofw,
# lib/preprocess_uda.py process_cofw_68_train / process_cofw_68_test), as the spec describes it.


def raw_cofw(path: Path, part: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Images, boxes and phis of a COFW file read with plain h5py (MATLAB arrays are column-major)."""
    image_key, box_key, phis_key = KEYS[part]
    with h5py.File(path, "r") as f:
        images = [np.transpose(f[ref][()]) for ref in f[image_key][()][0]]
        return images, np.transpose(f[box_key][()]), np.transpose(f[phis_key][()])


def official_image(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, ::-1]


def official_crop(image, bbox, xs, ys, target_size, scale=None):
    """The official COFW-family crop, one landmark at a time."""
    image_height, image_width, _ = image.shape
    xmin, ymin, width, height = bbox
    xmax = xmin + width - 1
    ymax = ymin + height - 1
    if scale is not None:
        xmin -= width * (scale - 1) / 2
        ymin -= height * (scale - 1) / 2
        xmax += width * (scale - 1) / 2
        ymax += height * (scale - 1) / 2
    xmin = max(xmin, 0)
    ymin = max(ymin, 0)
    xmax = min(xmax, image_width - 1)
    ymax = min(ymax, image_height - 1)
    landmarks = [
        [(x - xmin) / (xmax - xmin), (y - ymin) / (ymax - ymin)] for x, y in zip(xs, ys, strict=True)
    ]
    crop = image[int(ymin) : int(ymax), int(xmin) : int(xmax), :]
    return cv2.resize(crop, (target_size, target_size)), np.array(landmarks, dtype=np.float64)


def our_crop(record, target_size=SIZE):
    image = record.image.load()
    box, points = record.rule.apply(record.points, record.box, image.shape[1], image.shape[0])
    return crop_and_resize(image, box, target_size), points, box


# ---------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cofw_data")
    info = write_cofw_tree(root, n_train=5, n_test=6, image_size=96, seed=3)
    info["cofw68"] = write_cofw68_tree(root, n_test=6, image_size=96, seed=3)
    info["root"] = root
    return info


def cofw_phis(points: np.ndarray, flags: np.ndarray | None = None) -> np.ndarray:
    """(29, 2) points -> one 87-long phis row (29 x, 29 y, 29 flags)."""
    flags = np.zeros(29) if flags is None else flags
    return np.concatenate([points[:, 0], points[:, 1], flags])


@pytest.fixture
def hand_cofw(tmp_path) -> Path:
    """Three entries with hand-computed crops: a fractional box, a gray image with a box past its edges,
    and a box whose 1.3 enlargement lands on a float-rounding boundary."""
    points = np.full((29, 2), 5.0)
    points[1] = (-1.0, 9.0)
    points[2] = (7.5, 7.0)
    flags = np.zeros(29)
    flags[[3, 4]] = 1
    color = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    gray = np.arange(8 * 9, dtype=np.uint8).reshape(8, 9)
    big = np.full((40, 40, 3), 7, dtype=np.uint8)
    write_mat_v73(
        tmp_path / "COFW" / "COFW_train_color.mat",
        {
            "IsTr": [color, gray, big],
            "bboxesTr": np.array([[2.5, 3.0, 6.0, 5.0], [-2.0, -1.0, 8.0, 20.0], [4.0, 4.0, 20.0, 20.0]]),
            "phisTr": np.stack([cofw_phis(points, flags), cofw_phis(points), cofw_phis(points)]),
        },
    )
    return tmp_path / "COFW"


# ---------------------------------------------------------------------------------------------------------
# COFW


def test_registry_knows_both_formats():
    assert get_reader("cofw") is read_cofw and get_reader("cofw68") is read_cofw68


def test_hand_computed_supervised_crops(hand_cofw):
    records = read_cofw(hand_cofw, mat="COFW_train_color.mat", part="train", bad=BadInput("raise"))
    assert [r.name for r in records] == ["cofw_train_0001", "cofw_train_0002", "cofw_train_0003"]
    first, second, _ = records
    assert first.box == (2.5, 3.0, 6.0, 5.0)
    assert first.points.shape == (29, 2) and first.points[1].tolist() == [-1.0, 9.0]
    assert first.attributes["occluded"] == 2 and first.attributes["occlusion"][3:5] == (1, 1)
    assert second.attributes["occluded"] == 0 and first.attributes["index"] == 1

    box, points = first.rule.apply(first.points, first.box, 12, 10)
    assert box == CropBox(2.5, 3.0, 7.5, 7.0)  # x_max = x + w - 1, no enlargement
    assert points[0].tolist() == [0.5, 0.5]
    assert points[1].tolist() == [-0.7, 1.5]  # outside the box: not clipped
    assert points[2].tolist() == [1.0, 1.0]
    assert box.slices() == (slice(3, 7), slice(2, 7))

    box, points = second.rule.apply(second.points, second.box, 9, 8)
    assert box == CropBox(0, 0, 5.0, 7)  # clamped to [0, W - 1] x [0, H - 1]
    assert points[0].tolist() == [1.0, 5 / 7]
    crop, _, _ = our_crop(second, 16)
    gray = np.arange(72, dtype=np.uint8).reshape(8, 9)
    assert np.array_equal(crop, cv2.resize(cv2.cvtColor(gray[0:7, 0:5], cv2.COLOR_GRAY2BGR), (16, 16)))


def test_hand_computed_unlabeled_13_crop(hand_cofw):
    records = read_cofw(
        hand_cofw, mat="COFW_train_color.mat", part="train", scale=1.3, unlabeled=True, bad=BadInput("raise")
    )
    third = records[2]
    assert third.points is None and third.attributes == {"index": 3}
    box, points = third.rule.apply(third.points, third.box, 40, 40)
    assert points is None
    # 4 - 20 * (1.3 - 1) / 2 = 1 - 2**-51: the crop starts at column 0, where 4 - 20 * 0.15 = 1.0 would give 1
    assert box == CropBox(1 - 2**-51, 1 - 2**-51, 26.0, 26.0)
    assert box.slices() == (slice(0, 26), slice(0, 26))
    assert int(4 - 20 * 0.15) == 1


def test_parsed_values_and_names_match_the_file(tree):
    for part, count in (("train", 5), ("test", 6)):
        records = read_cofw(
            tree["root"] / "COFW", mat=f"COFW_{part}_color.mat", part=part, bad=BadInput("raise")
        )
        images, boxes, phis = raw_cofw(tree[part]["mat"], part)
        assert [r.name for r in records] == [f"cofw_{part}_{i:04d}" for i in range(1, count + 1)]
        for i, record in enumerate(records):
            assert record.box == tuple(boxes[i])
            assert np.array_equal(record.points[:, 0], phis[i, :29]) and np.array_equal(
                record.points[:, 1], phis[i, 29:58]
            )
            assert record.attributes["occluded"] == int(phis[i, 58:].sum())
            assert record.attributes["index"] == i + 1
            assert record.source.endswith(f"COFW_{part}_color.mat[{i + 1}]")


def test_supervised_crops_are_bit_exact(tree):
    for part in ("train", "test"):
        records = read_cofw(
            tree["root"] / "COFW", mat=f"COFW_{part}_color.mat", part=part, bad=BadInput("raise")
        )
        images, boxes, phis = raw_cofw(tree[part]["mat"], part)
        for record, image, bbox, phi in zip(records, images, boxes, phis, strict=True):
            expected_crop, expected_points = official_crop(
                official_image(image), bbox, phi[:29], phi[29:58], SIZE
            )
            crop, points, _ = our_crop(record)
            assert np.array_equal(crop, expected_crop), record.name
            assert np.array_equal(points, expected_points), record.name


def test_unlabeled_13_crops_are_bit_exact_and_hit_the_rounding_boundary(tree):
    spec = {"mat": "COFW_train_color.mat", "part": "train", "scale": 1.3, "unlabeled": True}
    records = read_cofw(tree["root"] / "COFW", **spec, bad=BadInput("raise"))
    images, boxes, phis = raw_cofw(tree["train"]["mat"], "train")
    for record, image, bbox, phi in zip(records, images, boxes, phis, strict=True):
        assert record.points is None and "occluded" not in record.attributes
        expected_crop, _ = official_crop(official_image(image), bbox, phi[:29], phi[29:58], SIZE, scale=1.3)
        crop, _, _ = our_crop(record)
        assert np.array_equal(crop, expected_crop), record.name
    # entry 5 (generator case 4): the official float margin moves the int() edge; a 0.15 literal would not
    x, y, w, h = boxes[4]
    box = records[4].rule.apply(None, records[4].box, images[4].shape[1], images[4].shape[0])[0]
    assert int(box.x0) == int(x - w * (1.3 - 1) / 2) == int(x - w * 0.15) - 1
    assert int(box.y0) == int(y - h * 0.15) - 1


def test_edge_cases_gray_image_and_points_outside(tree):
    records = read_cofw(
        tree["root"] / "COFW", mat="COFW_train_color.mat", part="train", bad=BadInput("raise")
    )
    assert tree["train"]["images"][1].ndim == 2  # stored gray
    gray = records[1].image.load()
    assert gray.shape[2] == 3 and np.array_equal(gray[:, :, 0], gray[:, :, 2])
    cut = records[2]  # image cut on the left: landmarks and box start outside the image
    assert cut.points[:, 0].min() < 0 and cut.box[0] < 0
    (
        box,
        points,
    ) = cut.rule.apply(cut.points, cut.box, *tree["train"]["images"][2].shape[1::-1])
    assert box.x0 == 0 and points[:, 0].min() < 0  # clamped box, landmarks not clipped
    past = records[3]  # box past the right and bottom edges
    w, h = tree["train"]["images"][3].shape[1::-1]
    assert past.box[0] + past.box[2] - 1 > w - 1
    box, _ = past.rule.apply(past.points, past.box, w, h)
    assert (box.x1, box.y1) == (w - 1, h - 1)


def test_reading_decodes_no_image(tree, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(matlab_module, "load_mat_v73_cell_item", fail)
    records = read_cofw(tree["root"] / "COFW", mat="COFW_test_color.mat", part="test", bad=BadInput("raise"))
    size = tree["test"]["mat"].stat().st_size
    assert records[2].image.identity() == f"COFW_test_color.mat:{size}:IsT[2]"
    with pytest.raises(AssertionError, match="decoded"):
        records[0].image.load()


def write_bad_cofw(directory: Path) -> None:
    points = np.full((29, 2), 5.0)
    nan_points = points.copy()
    nan_points[3, 1] = np.nan
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    write_mat_v73(
        directory / "COFW_test_color.mat",
        {
            "IsT": [image, image, image, np.zeros((10, 12, 2), dtype=np.uint8), image, image],
            "bboxesT": np.array(
                [[1, 1, 6, 6], [1, 1, 0, 6], [1, 1, 6, 6], [1, 1, 6, 6], [100, 1, 6, 6], [2, 2, 5, 5]],
                dtype=float,
            ),
            "phisT": np.stack([cofw_phis(points)] * 2 + [cofw_phis(nan_points)] + [cofw_phis(points)] * 3),
        },
    )


def test_bad_entries_raise_or_are_skipped(tmp_path):
    write_bad_cofw(tmp_path)
    with pytest.raises(DataFormatError, match=r"COFW_test_color.mat: entry 2 .*non-positive width"):
        read_cofw(tmp_path, mat="COFW_test_color.mat", part="test", bad=BadInput("raise"))
    bad = BadInput("skip")
    records = read_cofw(tmp_path, mat="COFW_test_color.mat", part="test", bad=bad)
    assert [r.name for r in records] == [
        "cofw_test_0001",
        "cofw_test_0006",
    ]  # names keep the file's numbering
    assert len(bad.skipped) == 4
    assert "entry 3" in bad.skipped[1] and "NaN" in bad.skipped[1]
    assert "entry 4" in bad.skipped[2] and "(10, 12, 2)" in bad.skipped[2]
    assert "entry 5" in bad.skipped[3] and "empty face box" in bad.skipped[3]
    # unlabeled: the NaN landmarks no longer matter
    unlabeled = read_cofw(
        tmp_path, mat="COFW_test_color.mat", part="test", unlabeled=True, bad=BadInput("skip")
    )
    assert [r.name for r in unlabeled] == ["cofw_test_0001", "cofw_test_0003", "cofw_test_0006"]


def test_file_level_errors(tmp_path):
    with pytest.raises(MissingDownloadError, match="COFW_train_color.mat"):
        read_cofw(tmp_path, mat="COFW_train_color.mat", part="train", bad=BadInput("raise"))
    scipy_io.savemat(
        tmp_path / "COFW_train_color.mat", {"IsTr": np.zeros((2, 2)), "bboxesTr": np.zeros((1, 4))}
    )
    with pytest.raises(
        DataFormatError, match=r"COFW needs the MATLAB v7.3 \(HDF5\) file COFW_train_color.mat .*v5"
    ):
        read_cofw(tmp_path, mat="COFW_train_color.mat", part="train", bad=BadInput("raise"))
    image = np.zeros((10, 12), dtype=np.uint8)
    write_mat_v73(
        tmp_path / "a.mat", {"IsT": [image, image], "bboxesT": np.ones((1, 4)), "phisT": np.ones((2, 87))}
    )
    with pytest.raises(DataFormatError, match=r"IsT has 2 entries, bboxesT 1 rows, phisT 2 rows"):
        read_cofw(tmp_path, mat="a.mat", part="test", bad=BadInput("raise"))
    write_mat_v73(tmp_path / "b.mat", {"IsT": [image], "bboxesT": np.ones((1, 4)), "phisT": np.ones((1, 40))})
    with pytest.raises(DataFormatError, match="phisT has 40 columns, expected at least 58"):
        read_cofw(tmp_path, mat="b.mat", part="test", bad=BadInput("raise"))
    write_mat_v73(
        tmp_path / "c.mat", {"IsTr": [image], "bboxesTr": np.ones((1, 4)), "phisTr": np.ones((1, 87))}
    )
    with pytest.raises(
        DataFormatError, match=r"c.mat: no variable 'bboxesT'.*\['IsTr', 'bboxesTr', 'phisTr'\]"
    ):
        read_cofw(tmp_path, mat="c.mat", part="test", bad=BadInput("raise"))
    with pytest.raises(ValueError, match="part must be one of"):
        read_cofw(tmp_path, mat="c.mat", part="val", bad=BadInput("raise"))


# ---------------------------------------------------------------------------------------------------------
# COFW-68


def test_cofw68_values_names_and_int16_boxes(tree):
    records = read_cofw68(tree["root"] / "COFW68", **COFW68_SPEC, bad=BadInput("raise"))
    boxes = scipy_io.loadmat(tree["cofw68"]["bboxes_mat"])["bboxes"]
    assert boxes.dtype == np.int16
    assert [r.name for r in records] == [f"cofw_test_{i:04d}" for i in range(1, 7)]
    for i, record in enumerate(records):
        points = scipy_io.loadmat(tree["root"] / "COFW68" / "cofw68_test_annotations" / f"{i + 1}_points.mat")
        assert np.array_equal(record.points, points["Points"])
        assert record.box == tuple(int(v) for v in boxes[i]) and all(type(v) is int for v in record.box)
        assert record.rule == CofwBox(1.3, "int16")
        assert record.image.identity().startswith("../COFW/COFW_test_color.mat:")


def test_cofw68_crops_are_bit_exact(tree):
    records = read_cofw68(tree["root"] / "COFW68", **COFW68_SPEC, bad=BadInput("raise"))
    images, _, _ = raw_cofw(tree["test"]["mat"], "test")
    boxes = scipy_io.loadmat(tree["cofw68"]["bboxes_mat"])[
        "bboxes"
    ]  # int16 rows, as the official code has them
    for i, (record, image) in enumerate(zip(records, images, strict=True)):
        anno = scipy_io.loadmat(tree["root"] / "COFW68" / "cofw68_test_annotations" / f"{i + 1}_points.mat")[
            "Points"
        ]
        expected_crop, expected_points = official_crop(
            official_image(image), boxes[i, :], anno[:, 0], anno[:, 1], SIZE, scale=1.3
        )
        crop, points, _ = our_crop(record)
        assert np.array_equal(crop, expected_crop), record.name
        assert np.array_equal(points, expected_points), record.name
    assert min(p.min() for p in (our_crop(r)[1] for r in records)) < 0  # landmarks not clipped (cut image)


@pytest.fixture
def hand_cofw68(tmp_path) -> Path:
    big = np.full((40, 40, 3), 9, dtype=np.uint8)
    gray = np.arange(30 * 25, dtype=np.uint8).reshape(30, 25)
    write_mat_v73(tmp_path / "COFW" / "COFW_test_color.mat", {"IsT": [big, gray]})
    root = tmp_path / "COFW68"
    (root / "cofw68_test_annotations").mkdir(parents=True)
    scipy_io.savemat(
        root / "cofw68_test_bboxes.mat", {"bboxes": np.array([[4, 4, 20, 20], [-3, 2, 30, 10]], np.int16)}
    )
    for i, corner_points in enumerate([[26.0, 26.0], [24.0, 12.5]], start=1):
        points = np.full((68, 2), 10.0)
        points[0] = corner_points
        points[1] = (-6.0, 0.4999999999999998)
        scipy_io.savemat(
            root / "cofw68_test_annotations" / f"{i}_points.mat", {"Points": points, "Occ": np.zeros((68, 1))}
        )
    return root


def test_cofw68_hand_computed_crops(hand_cofw68):
    first, second = read_cofw68(hand_cofw68, **COFW68_SPEC, bad=BadInput("raise"))
    box, points = first.rule.apply(first.points, first.box, 40, 40)
    assert box == CropBox(1 - 2**-51, 1 - 2**-51, 26.0, 26.0)  # x + w - 1 = 23, then +- 20 * (1.3 - 1) / 2
    assert points[0].tolist() == [1.0, 1.0]
    box, points = second.rule.apply(second.points, second.box, 25, 30)
    # x: -3 - 4.5.. -> 0; 26 + 4.5.. = 30.5 -> W - 1 = 24
    # y: 2 - 1.5.. = 0.4999999999999998; 11 + 1.5.. = 12.5
    assert box == CropBox(0, 0.4999999999999998, 24, 12.5)
    assert points[0].tolist() == [1.0, 1.0]
    assert points[1].tolist() == [-0.25, 0.0]  # left of the image: not clipped
    crop, _, _ = our_crop(second, 8)
    gray = np.arange(750, dtype=np.uint8).reshape(30, 25)
    assert np.array_equal(crop, cv2.resize(cv2.cvtColor(gray[0:12, 0:24], cv2.COLOR_GRAY2BGR), (8, 8)))


def test_cofw68_reads_v73_small_files_too(hand_cofw68):
    before = read_cofw68(hand_cofw68, **COFW68_SPEC, bad=BadInput("raise"))
    boxes = scipy_io.loadmat(hand_cofw68 / "cofw68_test_bboxes.mat")["bboxes"]
    write_mat_v73(hand_cofw68 / "cofw68_test_bboxes.mat", {"bboxes": boxes})
    annotation = hand_cofw68 / "cofw68_test_annotations" / "2_points.mat"
    write_mat_v73(annotation, {"Points": scipy_io.loadmat(annotation)["Points"], "Occ": np.zeros((68, 1))})
    after = read_cofw68(hand_cofw68, **COFW68_SPEC, bad=BadInput("raise"))
    assert [(r.name, r.box, r.rule) for r in after] == [(r.name, r.box, r.rule) for r in before]
    assert all(np.array_equal(a.points, b.points) for a, b in zip(after, before, strict=True))


def test_cofw68_bad_entries_and_missing_files(hand_cofw68, tmp_path):
    annotations = hand_cofw68 / "cofw68_test_annotations"
    (annotations / "1_points.mat").unlink()
    with pytest.raises(DataFormatError, match=r"1_points.mat \(entry 1.*annotation file is missing"):
        read_cofw68(hand_cofw68, **COFW68_SPEC, bad=BadInput("raise"))
    bad = BadInput("skip")
    assert [r.name for r in read_cofw68(hand_cofw68, **COFW68_SPEC, bad=bad)] == ["cofw_test_0002"]
    assert len(bad.skipped) == 1
    scipy_io.savemat(annotations / "1_points.mat", {"Points": np.zeros((29, 2))})
    with pytest.raises(DataFormatError, match=r"1_points.mat .*Points has shape \(29, 2\)"):
        read_cofw68(hand_cofw68, **COFW68_SPEC, bad=BadInput("raise"))
    scipy_io.savemat(hand_cofw68 / "cofw68_test_bboxes.mat", {"bboxes": np.ones((3, 4), np.int16)})
    with pytest.raises(DataFormatError, match="3 boxes for the 2 images"):
        read_cofw68(hand_cofw68, **COFW68_SPEC, bad=BadInput("raise"))
    with pytest.raises(MissingDownloadError, match=r"COFW68/cofw68_test_annotations"):
        read_cofw68(
            hand_cofw68, **{**COFW68_SPEC, "annotations_dir": "cofw68_test_annotations_x"}, bad=BadInput()
        )
    (hand_cofw68.parent / "COFW" / "COFW_test_color.mat").unlink()
    with pytest.raises(MissingDownloadError, match=rf"{tmp_path}/COFW/COFW_test_color.mat"):
        read_cofw68(hand_cofw68, **COFW68_SPEC, bad=BadInput("raise"))


# ---------------------------------------------------------------------------------------------------------
# YAML facts


def test_cofw29_scheme_matches_the_official_flip_and_norms():
    scheme = load_landmark_scheme("cofw29")
    flip = np.array(scheme.flip_permutation)
    assert scheme.num_landmarks == 29
    assert flip.tolist() == [i - 1 for i in OFFICIAL_COFW_FLIP_1BASED]
    assert np.array_equal(flip[flip], np.arange(29))
    assert scheme.norm_indices("inter_ocular") == ((8,), (9,))
    assert scheme.norm_indices("inter_pupil") == ((16,), (17,))


def test_dataset_yamls_drive_the_readers(tree):
    cofw = yaml.safe_load((META_DIR / "cofw.yaml").read_text())
    assert (cofw["name"], cofw["landmarks"], cofw["format"], cofw["dir"]) == (
        "cofw",
        "cofw29",
        "cofw",
        "COFW",
    )
    assert list(cofw["metrics"].items()) == [("nme_io", "inter_ocular"), ("nme_ip", "inter_pupil")]
    assert cofw["train"] == "train" and cofw["test"] == {"full": "test"}
    counts = {}
    for split, spec in cofw["splits"].items():
        counts[split] = len(read_records(cofw["format"], tree["root"] / cofw["dir"], **spec))
    assert counts == {"train": 5, "test": 6}

    cofw68 = yaml.safe_load((META_DIR / "cofw68.yaml").read_text())
    assert (cofw68["landmarks"], cofw68["format"], cofw68["dir"]) == ("ibug68", "cofw68", "COFW68")
    assert cofw68["train"] is None and cofw68["test"] == {"full": "test"}
    assert list(cofw68["metrics"]) == ["nme_io"]
    records = read_records(cofw68["format"], tree["root"] / cofw68["dir"], **cofw68["splits"]["test"])
    assert [r.points.shape for r in records] == [(68, 2)] * 6
