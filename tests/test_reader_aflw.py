"""AFLW-19 reader: the .mat protocol (ra order, split point, names), the official crop, bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import yaml

from pipnet_lit.datasets.geometry import CropBox, crop_and_resize
from pipnet_lit.datasets.meta import META_DIR, load_landmark_scheme
from pipnet_lit.datasets.readers import read_records
from pipnet_lit.datasets.readers.aflw import BoxAFLW, read_aflw
from pipnet_lit.datasets.records import BadInput, DataFormatError, MissingDownloadError
from pipnet_lit.synthetic.raw.aflw import write_aflw_tree

OFFICIAL_AFLW_FLIP_1BASED = [6, 5, 4, 3, 2, 1, 12, 11, 10, 9, 8, 7, 15, 14, 13, 18, 17, 16, 19]
CROP = 48


def official_process_aflw(image_path: Path, bbox: np.ndarray, anno: np.ndarray, target_size: int):
    """Loop re-implementation of the official AFLW crop: clip each landmark, clamp the box, int() bounds."""
    image = cv2.imread(str(image_path))
    image_height, image_width, _ = image.shape
    xs, ys = [], []
    for x in anno[:19]:
        x = 0 if x < 0 else x
        xs.append(image_width if x > image_width else x)
    for y in anno[19:]:
        y = 0 if y < 0 else y
        ys.append(image_height if y > image_height else y)
    xmin, xmax, ymin, ymax = bbox
    xmin = max(xmin, 0)
    ymin = max(ymin, 0)
    xmax = min(xmax, image_width - 1)
    ymax = min(ymax, image_height - 1)
    patch = image[int(ymin) : int(ymax), int(xmin) : int(xmax), :]
    crop = cv2.resize(patch, (target_size, target_size))
    landmarks = [
        [(x - xmin) / (xmax - xmin), (y - ymin) / (ymax - ymin)] for x, y in zip(xs, ys, strict=True)
    ]
    return crop, np.array(landmarks)


def crop_record(record, size: int = CROP):
    """What the crop cache does with a record: load, apply the rule, crop."""
    image = record.image.load()
    box, normalized = record.rule.apply(record.points, record.box, image.shape[1], image.shape[0])
    return crop_and_resize(image, box, size), normalized, box


def save_aflw_mat(path: Path, bbox, data, names, ra, mask=None, **extra) -> None:
    """An AFLWinfo_release.mat with the given rows (N x 4, N x 38, N names, 1 x N ra)."""
    cells = np.empty((len(names), 1), dtype=object)
    cells[:, 0] = names
    mask = np.ones((len(names), 19)) if mask is None else np.asarray(mask, float)
    content = {"bbox": np.asarray(bbox, float), "data": np.asarray(data, float), "nameList": cells, "ra": ra}
    content.update(mask_new=mask, **extra)
    scipy.io.savemat(path, content, format="5")


def noise_image(rng: np.random.Generator, width: int, height: int, gray: bool = False) -> np.ndarray:
    shape = (height, width) if gray else (height, width, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture()
def tree(tmp_path: Path) -> dict:
    return write_aflw_tree(tmp_path, n_faces=6, image_size=80, seed=4)


def test_records_match_the_official_loop_bit_for_bit(tree):
    mat = scipy.io.loadmat(tree["mat"])
    ra = mat["ra"][0].astype(int)
    seen_clipped = False
    for part, indices in (("train", ra[:4]), ("test", ra[4:])):
        records = read_aflw(tree["dir"], part=part, split_point=4, bad=BadInput("raise"))
        assert [r.name for r in records] == [f"aflw_{part}_{i:05d}" for i in indices]
        for record, index in zip(records, indices, strict=True):
            row = index - 1
            assert record.attributes["index"] == index
            assert record.attributes["image"] == tree["names"][row] == mat["nameList"][row][0][0]
            np.testing.assert_array_equal(record.points, tree["points"][row])
            assert record.box == tuple(mat["bbox"][row])
            crop, normalized, _ = crop_record(record)
            expected_crop, expected = official_process_aflw(
                tree["dir"] / "flickr" / tree["names"][row], mat["bbox"][row], mat["data"][row], CROP
            )
            assert np.array_equal(crop, expected_crop)
            assert np.array_equal(normalized, expected)
            seen_clipped |= bool((record.points[:, 0] < 0).any())
    assert seen_clipped  # the generator's out-of-image face went through the clip


def test_split_point_from_the_yaml_and_ra_order(tmp_path):
    info = write_aflw_tree(tmp_path, n_faces=5, image_size=64, seed=1)
    meta = yaml.safe_load((META_DIR / "aflw.yaml").read_text())
    assert meta["format"] == "aflw" and meta["dir"] == "AFLW" and meta["landmarks"] == "aflw19"
    assert meta["train"] == "train" and meta["test"] == {"full": "test"}
    specs = meta["splits"]
    assert specs["train"]["split_point"] == specs["test"]["split_point"] == 20000
    assert (specs["train"]["part"], specs["test"]["part"]) == ("train", "test")
    ra = list(info["ra"])
    assert ra != sorted(ra)  # the order below is ra's, not the file's
    train = read_records("aflw", info["dir"], **{**specs["train"], "split_point": 3})
    test = read_records("aflw", info["dir"], **{**specs["test"], "split_point": 3})
    assert [r.name for r in train] == [f"aflw_train_{i:05d}" for i in ra[:3]]
    assert [r.name for r in test] == [f"aflw_test_{i:05d}" for i in ra[3:]]
    assert [r.attributes["index"] for r in train + test] == ra
    with pytest.raises(ValueError, match="split_point=20000 is outside 0..5"):
        read_records("aflw", info["dir"], **specs["train"])
    with pytest.raises(ValueError, match="part must be one of"):
        read_aflw(info["dir"], part="val", split_point=3, bad=BadInput())


def test_rule_hand_computed_clips_points_and_clamps_the_box():
    # W = 40, H = 30: box past the left and right edges, landmarks past the right and bottom edges.
    points = np.array([[-1.0, 5.0], [41.0, 31.0], [19.5, 15.75]])
    box, normalized = BoxAFLW().apply(points, (-3.5, 45.25, 2.75, 28.5), 40, 30)
    assert box == CropBox(0, 2.75, 39, 28.5)
    assert box.slices() == (slice(2, 28), slice(0, 39))
    expected = np.array([[0 / 39, 2.25 / 25.75], [40 / 39, 27.25 / 25.75], [19.5 / 39, 13 / 25.75]])
    assert np.array_equal(normalized, expected)
    assert normalized[1, 0] > 1  # clipped to W, not W - 1: the official quirk is kept


def test_hand_made_mat_gray_image_and_edges(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "AFLW"
    (root / "flickr" / "0").mkdir(parents=True)
    cv2.imwrite(str(root / "flickr" / "0" / "image00001.png"), noise_image(rng, 40, 30, gray=True))
    cv2.imwrite(str(root / "flickr" / "0" / "image00002.png"), noise_image(rng, 52, 44))
    xs = np.linspace(-1.0, 41.0, 19)
    ys = np.linspace(2.0, 31.0, 19)
    data = [np.concatenate([xs, ys]), np.concatenate([xs + 5, ys + 5])]
    names = ["0/image00001.png", "0/image00002.png"]
    save_aflw_mat(root / "AFLWinfo_release.mat", [[-3.5, 45.25, 2.75, 28.5], [5.5, 30.9, 6.1, 40.99]], data,
                  names, np.array([[2, 1]], dtype=np.uint16), mask=np.ones((2, 19)))  # fmt: skip
    (second,) = read_aflw(root, part="train", split_point=1, bad=BadInput())
    (first,) = read_aflw(root, part="test", split_point=1, bad=BadInput())
    assert (second.name, first.name) == ("aflw_train_00002", "aflw_test_00001")
    assert second.box == (5.5, 30.9, 6.1, 40.99) and first.attributes["all_visible"] is True
    crop, normalized, box = crop_record(first)
    assert box.slices() == (slice(2, 28), slice(0, 39))
    assert np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 1], crop[..., 2])
    expected_crop, expected = official_process_aflw(
        root / "flickr" / names[0], (-3.5, 45.25, 2.75, 28.5), data[0], CROP
    )
    assert np.array_equal(crop, expected_crop) and np.array_equal(normalized, expected)
    assert normalized[:, 0].max() == 40 / 39 and normalized[:, 1].max() == (30 - 2.75) / (28.5 - 2.75)
    crop, _, box = crop_record(second)
    assert box == CropBox(5.5, 6.1, 30.9, 40.99) and box.slices() == (slice(6, 40), slice(5, 30))


def test_all_visible_from_mask_new_and_ra_as_a_column(tree, tmp_path):
    mat = scipy.io.loadmat(tree["mat"])
    # The same file with ra as an N x 1 int32 column: same faces, same order.
    save_aflw_mat(tree["mat"], mat["bbox"], mat["data"], list(tree["names"]), mat["ra"].T.astype(np.int32),
                  mask=mat["mask_new"])  # fmt: skip
    records = read_aflw(tree["dir"], part="train", split_point=6, bad=BadInput())
    assert [r.attributes["index"] for r in records] == list(tree["ra"])
    visible = {r.attributes["index"]: r.attributes["all_visible"] for r in records}
    assert visible == {i + 1: bool(tree["mask"][i].all()) for i in range(6)}
    assert sorted(visible.values()) == [False, False, True, True, True, True]  # faces 1 and 4 hide a point


def test_missing_download(tmp_path):
    info = write_aflw_tree(tmp_path, n_faces=2, image_size=64)
    with pytest.raises(MissingDownloadError, match="other.mat"):
        read_aflw(info["dir"], mat="other.mat", part="train", split_point=1, bad=BadInput())
    (info["dir"] / "flickr").rename(info["dir"] / "images")
    with pytest.raises(MissingDownloadError, match=r"AFLW/flickr"):
        read_aflw(info["dir"], part="train", split_point=1, bad=BadInput())


def test_bad_rows_raise_or_are_skipped(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "AFLW"
    (root / "flickr" / "2").mkdir(parents=True)
    for k in (1, 3):
        cv2.imwrite(str(root / "flickr" / "2" / f"image{k:05d}.jpg"), noise_image(rng, 40, 40))
    data = np.tile(np.linspace(5, 30, 38), (4, 1))
    data[2, 7] = np.nan
    names = ["2/image00001.jpg", "2/image00002.jpg", "2/image00003.jpg", "2/image00003.jpg"]
    box = [2.0, 35.0, 2.0, 35.0]
    save_aflw_mat(root / "AFLWinfo_release.mat", [box, box, box, [30.0, 10.0, 2.0, 35.0]], data, names,
                  np.array([[4, 3, 2, 1]]))  # fmt: skip
    mat = root / "AFLWinfo_release.mat"
    with pytest.raises(DataFormatError, match=rf"{mat}: face 4 .*empty box"):
        read_aflw(root, part="train", split_point=4, bad=BadInput("raise"))
    bad = BadInput("skip")
    records = read_aflw(root, part="train", split_point=4, bad=bad)
    assert [r.name for r in records] == ["aflw_train_00001"]
    assert len(bad.skipped) == 3
    assert "face 3" in bad.skipped[1] and "NaN" in bad.skipped[1]
    assert "face 2" in bad.skipped[2] and "image00002.jpg not found" in bad.skipped[2]


def test_file_level_errors_name_the_file(tmp_path):
    root = tmp_path / "AFLW"
    (root / "flickr").mkdir(parents=True)
    mat = root / "AFLWinfo_release.mat"
    row = [np.zeros(4), np.zeros(38)]
    save_aflw_mat(mat, [row[0]] * 2, [row[1]] * 2, ["a.jpg", "b.jpg"], np.array([[1, 1]]))
    with pytest.raises(DataFormatError, match="ra repeats face 1"):
        read_aflw(root, part="train", split_point=1, bad=BadInput())
    save_aflw_mat(mat, [row[0]] * 2, [row[1]] * 2, ["a.jpg", "b.jpg"], np.array([[1, 3]]))
    with pytest.raises(DataFormatError, match=r"ra\(2\) = 3 is not a face index in 1..2"):
        read_aflw(root, part="train", split_point=1, bad=BadInput())
    save_aflw_mat(mat, [row[0]] * 2, [np.zeros(36)] * 2, ["a.jpg", "b.jpg"], np.array([[1, 2]]))
    with pytest.raises(DataFormatError, match="'data' must be a numeric N x 38"):
        read_aflw(root, part="train", split_point=1, bad=BadInput())
    scipy.io.savemat(mat, {"bbox": np.zeros((2, 4)), "data": np.zeros((2, 38))})
    with pytest.raises(
        DataFormatError,
        match=r"no variable 'nameList' in this MATLAB file; it holds \['bbox', 'data'\]",
    ):
        read_aflw(root, part="train", split_point=1, bad=BadInput())


def test_matlab_v73_file_is_rejected_clearly(tmp_path):
    h5py = pytest.importorskip("h5py")
    root = tmp_path / "AFLW"
    (root / "flickr").mkdir(parents=True)
    mat = root / "AFLWinfo_release.mat"
    with h5py.File(mat, "w", userblock_size=512) as handle:
        handle["bbox"] = np.zeros((4, 2))
    header = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    )
    with open(mat, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    with pytest.raises(
        DataFormatError, match=rf"AFLW-19 needs the MATLAB v5 file .*\({mat}\) is MATLAB v7.3"
    ):
        read_aflw(root, part="train", split_point=0, bad=BadInput())


def test_aflw19_scheme_and_metrics():
    scheme = load_landmark_scheme("aflw19")
    assert scheme.num_landmarks == 19
    assert list(scheme.flip_permutation) == [i - 1 for i in OFFICIAL_AFLW_FLIP_1BASED]
    assert scheme.norms == {}  # the official AFLW test uses norm 1 (no eye-based normalization)
    covered = sorted(i for lo, hi in scheme.groups.values() for i in range(lo, hi + 1))
    assert covered == list(range(19))
    meta = yaml.safe_load((META_DIR / "aflw.yaml").read_text())
    assert list(meta["metrics"].items()) == [
        ("nme_crop", "none"),
        ("nme_diag", "box_diag"),
        ("nme_box", "box_sqrt_area"),
        ("nme_long", "box_long_side"),
    ]


def test_generator_writes_the_release_layout(tree):
    mat = scipy.io.loadmat(tree["mat"])
    shapes = {key: mat[key].shape for key in ("bbox", "data", "nameList", "ra", "mask_new")}
    assert shapes == {"bbox": (6, 4), "data": (6, 38), "nameList": (6, 1), "ra": (1, 6), "mask_new": (6, 19)}
    assert sorted(mat["ra"][0].astype(int)) == list(range(1, 7))
    assert {name.split("/")[0] for name in tree["names"]} == {"0", "2", "3"}
    for name, (width, height) in zip(tree["names"], tree["sizes"], strict=True):
        image = cv2.imread(str(tree["dir"] / "flickr" / name), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == (height, width)
    assert cv2.imread(str(tree["dir"] / "flickr" / tree["names"][1]), cv2.IMREAD_UNCHANGED).ndim == 2
    assert len({tuple(s) for s in tree["sizes"]}) > 1
