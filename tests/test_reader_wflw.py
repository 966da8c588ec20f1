"""WFLW reader: parsing, names, subsets, official crops bit for bit, 98 -> 68, bad input, YAML files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipnet_lit.datasets.geometry import crop_and_resize
from pipnet_lit.datasets.meta import META_DIR, load_landmark_scheme
from pipnet_lit.datasets.readers import get_reader
from pipnet_lit.datasets.readers.wflw import WflwBox, read_wflw, wflw98_to_68
from pipnet_lit.datasets.records import BadInput, DataFormatError, MissingDownloadError
from pipnet_lit.synthetic.raw.wflw import SUBSET_FLAGS, TEST_LIST, TRAIN_LIST, write_wflw_tree

CROP_SIZE = 64
SUBSETS = {name: f"WFLW_annotations/list_98pt_test/list_98pt_test_{name}.txt" for name in SUBSET_FLAGS}
FLAGS = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
# The official points_flip for WFLW (lib/train.py), 0-based as written there.
OFFICIAL_WFLW_FLIP = [
    32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
    5, 4, 3, 2, 1, 0, 46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38, 51, 52, 53,
    54, 59, 58, 57, 56, 55, 72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65, 82, 81, 80, 79,
    78, 77, 76, 87, 86, 85, 84, 83, 92, 91, 90, 89, 88, 95, 94, 93, 97, 96,
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Independent re-implementations of the official arithmetic (written from the spec, Python floats, loops).


def official_process_wflw(fields: list[str], images_dir: Path, target_size: int, gssl: bool = False):
    """process_wflw of lib/preprocess.py (gssl=False) / lib/preprocess_uda.py (gssl=True)."""
    image = cv2.imread(str(images_dir / fields[-1]))
    image_height, image_width, _ = image.shape
    values = [float(v) for v in fields[:196]]
    xs, ys = values[0::2], values[1::2]
    xs = [x if x >= 0 else 0 for x in xs]
    xs = [x if x <= image_width else image_width for x in xs]
    ys = [y if y >= 0 else 0 for y in ys]
    ys = [y if y <= image_height else image_height for y in ys]
    xmin, ymin, xmax, ymax = (float(v) for v in fields[196:200])
    width = xmax - xmin
    height = ymax - ymin
    scale = 1.2
    xmin -= width * (scale - 1) / 2
    if gssl:
        ymin += height * (scale - 1) / 2
    else:
        ymin -= height * (scale - 1) / 2
    xmax += width * (scale - 1) / 2
    ymax += height * (scale - 1) / 2
    xmin = max(xmin, 0)
    ymin = max(ymin, 0)
    xmax = min(xmax, image_width - 1)
    ymax = min(ymax, image_height - 1)
    width = xmax - xmin
    height = ymax - ymin
    patch = image[int(ymin) : int(ymax), int(xmin) : int(xmax), :]
    crop = cv2.resize(patch, (target_size, target_size))
    landmarks = [[(x - xmin) / width, (y - ymin) / height] for x, y in zip(xs, ys, strict=True)]
    return crop, np.array(landmarks, dtype=np.float64), (xmin, ymin, xmax, ymax)


def official_convert_wflw(normalized98: list[list[float]]) -> np.ndarray:
    """convert_wflw on one face, values passed through str() as in the official text files."""
    v = [str(c) for point in normalized98 for c in point]  # x0 y0 x1 y1 ... as written to test_WFLW_98.txt

    def x(i):
        return float(v[2 * i])

    def y(i):
        return float(v[2 * i + 1])

    out = []
    for i in range(17):
        out.append((x(2 * i), y(2 * i)))
    out.append((x(33), y(33)))
    for upper, lower in ((34, 41), (35, 40), (36, 39), (37, 38)):
        out.append((x(upper), float(str((y(upper) + y(lower)) / 2))))
    for upper, lower in ((42, 50), (43, 49), (44, 48), (45, 47)):
        out.append((x(upper), float(str((y(upper) + y(lower)) / 2))))
    out.append((x(46), y(46)))
    for i in range(51, 60):
        out.append((x(i), y(i)))
    for corner, (a1, a2, mid), corner2, (b1, b2, mid2) in (
        (60, (61, 63, 62), 64, (65, 67, 66)),
        (68, (69, 71, 70), 72, (73, 75, 74)),
    ):
        out.append((x(corner), y(corner)))
        for a in (a1, a2):
            out.append((0.666 * x(a) + 0.333 * x(mid), 0.666 * y(a) + 0.333 * y(mid)))
        out.append((x(corner2), y(corner2)))
        for b in (b1, b2):
            out.append((0.666 * x(b) + 0.333 * x(mid2), 0.666 * y(b) + 0.333 * y(mid2)))
    for i in range(76, 96):
        out.append((x(i), y(i)))
    assert len(out) == 68
    return np.array([[float(str(a)), float(str(b))] for a, b in out], dtype=np.float64)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def read_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def ours(record, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, object]:
    box, landmarks = record.rule.apply(record.points, record.box, image.shape[1], image.shape[0])
    return crop_and_resize(image, box, CROP_SIZE), landmarks, box


# ---------------------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("data") / "WFLW"
    return write_wflw_tree(root, n_train=4, n_test=7, image_size=96, seed=0)


def read_test(tree: dict, **kw) -> list:
    return read_wflw(tree["root"], file=TEST_LIST, subset_files=SUBSETS, bad=BadInput("raise"), **kw)


def write_list(tree: dict, name: str, lines: list[list[str]]) -> str:
    rel = f"custom/{name}"
    path = tree["root"] / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(fields) + "\n" for fields in lines))
    return rel


# ---------------------------------------------------------------------------------------------------------
# Parsing, names, attributes, subsets.


def test_generator_writes_the_real_layout_and_field_counts(tree):
    root = tree["root"]
    assert [len(f) for f in read_lines(root / TRAIN_LIST)] == [207] * 4
    assert [len(f) for f in read_lines(root / TEST_LIST)] == [207] * 7
    assert [len(f) for f in read_lines(root / "WFLW_annotations/list_98pt_test/list_98pt_test.txt")] == [
        197
    ] * 7
    for name, rel in SUBSETS.items():
        lines = read_lines(root / rel)
        assert lines and all(len(f) == 197 for f in lines), name
        assert len(lines) == len(tree["subsets"][name])
    assert {e["case"] for e in tree["test"]} >= {
        "cut_top_left",
        "grayscale",
        "cut_bottom_right",
        "shared_image",
    }
    gray = next(e for e in tree["test"] if e["case"] == "grayscale")
    assert cv2.imread(str(root / "WFLW_images" / gray["image"]), cv2.IMREAD_UNCHANGED).ndim == 2


@pytest.mark.parametrize("split", ["train", "test"])
def test_records_carry_the_raw_numbers_names_and_attributes(tree, split):
    list_file = TRAIN_LIST if split == "train" else TEST_LIST
    records = read_wflw(tree["root"], file=list_file, bad=BadInput("raise"))
    lines = read_lines(tree["root"] / list_file)
    assert [r.name for r in records] == [f"wflw_{split}_{i:04d}" for i in range(1, len(lines) + 1)]
    for record, fields, entry in zip(records, lines, tree[split], strict=True):
        assert record.points.shape == (98, 2)
        assert same_bits(record.points.reshape(-1), [float(v) for v in fields[:196]])
        assert same_bits(record.points, entry["points"])
        assert record.box == tuple(float(v) for v in fields[196:200]) == tuple(map(float, entry["rect"]))
        assert {k: record.attributes[k] for k in FLAGS} == entry["flags"]
        assert all(type(record.attributes[k]) is int for k in FLAGS)
        assert record.attributes["image"] == entry["image"] == fields[-1]
        assert record.image.path == tree["root"] / "WFLW_images" / entry["image"]
        assert record.source.endswith(f"{Path(list_file).name}:{records.index(record) + 1}")
    assert get_reader("wflw") is read_wflw


def test_subset_membership_follows_the_subset_files(tree):
    records = read_test(tree)
    for name, members in tree["subsets"].items():
        got = [i for i, r in enumerate(records) if r.attributes[f"in_{name}"] == 1]
        assert got == members, name
        assert all(r.attributes[f"in_{name}"] in (0, 1) for r in records)
    # The two faces of one image (same path) are told apart by their first x.
    shared = [i for i, e in enumerate(tree["test"]) if e["case"] == "shared_image"]
    assert (
        len(shared) == 2 and records[shared[0]].attributes["image"] == records[shared[1]].attributes["image"]
    )
    # Without subset files there are no in_* attributes.
    plain = read_wflw(tree["root"], file=TEST_LIST, bad=BadInput("raise"))
    assert not any(k.startswith("in_") for k in plain[0].attributes)


def test_subset_match_uses_the_first_x_string(tree):
    test_lines = read_lines(tree["root"] / TEST_LIST)
    member = test_lines[0][:196] + [test_lines[0][-1]]
    respelled = [member[0] + "0"] + member[1:]  # same number, another spelling
    assert float(respelled[0]) == float(member[0]) and respelled[0] != member[0]
    rel = write_list(tree, "list_98pt_test_respelled.txt", [member, respelled])
    bad = BadInput("skip")
    records = read_wflw(tree["root"], file=TEST_LIST, subset_files={"odd": rel}, bad=bad)
    assert [r.attributes["in_odd"] for r in records] == [1] + [0] * (len(records) - 1)
    assert len(bad.skipped) == 1 and f"{tree['root'] / rel}:2:" in bad.skipped[0]
    with pytest.raises(DataFormatError, match=r"list_98pt_test_respelled\.txt:2: no line"):
        read_wflw(tree["root"], file=TEST_LIST, subset_files={"odd": rel}, bad=BadInput("raise"))


def test_duplicate_key_matches_the_later_line_like_the_official_dict(tree):
    line = read_lines(tree["root"] / TEST_LIST)[2]
    rel = write_list(tree, "dup_test.txt", [line, line])
    sub = write_list(tree, "dup_subset.txt", [line[:196] + [line[-1]]])
    records = read_wflw(tree["root"], file=rel, subset_files={"s": sub}, bad=BadInput("raise"))
    assert [r.attributes["in_s"] for r in records] == [0, 1]
    assert [r.name for r in records] == ["wflw_test_0001", "wflw_test_0002"]


def test_bad_lines_keep_the_official_numbering(tree):
    lines = read_lines(tree["root"] / TEST_LIST)
    short = lines[1][:-2] + lines[1][-1:]  # 206 fields
    wordy = list(lines[3])
    wordy[5] = "abc"
    rel = write_list(tree, "list_bad_test.txt", [lines[0], short, lines[2], wordy, lines[4]])
    bad = BadInput("skip")
    records = read_wflw(tree["root"], file=rel, bad=bad)
    assert [r.name for r in records] == ["wflw_test_0001", "wflw_test_0003", "wflw_test_0005"]
    path = tree["root"] / rel
    assert len(bad.skipped) == 2
    assert (
        f"{path}:2:" in bad.skipped[0]
        and "expected 207 fields" in bad.skipped[0]
        and "got 206" in bad.skipped[0]
    )
    assert f"{path}:4:" in bad.skipped[1] and "numbers" in bad.skipped[1]
    with pytest.raises(DataFormatError, match=r"list_bad_test\.txt:2: expected 207 fields"):
        read_wflw(tree["root"], file=rel, bad=BadInput("raise"))


def test_bad_subset_lines_and_missing_images(tree):
    lines = read_lines(tree["root"] / TEST_LIST)
    missing = list(lines[1])
    missing[-1] = "0--Parade/no_such_image.jpg"
    rel = write_list(tree, "list_missing_test.txt", [lines[0], missing, lines[2]])
    sub = write_list(
        tree, "sub.txt", [lines[0][:196] + [lines[0][-1]], lines[2][:10], missing[:196] + [missing[-1]]]
    )
    bad = BadInput("skip")
    records = read_wflw(tree["root"], file=rel, subset_files={"s": sub}, bad=bad)
    assert [r.name for r in records] == ["wflw_test_0001", "wflw_test_0003"]
    assert [r.attributes["in_s"] for r in records] == [1, 0]
    # The missing image is reported once (the subset line pointing at it is not reported again).
    assert len(bad.skipped) == 2
    assert f"{tree['root'] / rel}:2:" in bad.skipped[0] and "no_such_image.jpg not found" in bad.skipped[0]
    assert f"{tree['root'] / sub}:2:" in bad.skipped[1] and "expected 197 fields" in bad.skipped[1]


def test_missing_downloads_name_the_path(tree, tmp_path):
    with pytest.raises(MissingDownloadError, match="WFLW folder not found"):
        read_wflw(tmp_path / "nowhere", file=TEST_LIST, bad=BadInput())
    with pytest.raises(MissingDownloadError, match=r"list_98pt_rect_attr_val\.txt"):
        read_wflw(tree["root"], file="WFLW_annotations/list_98pt_rect_attr_val.txt", bad=BadInput())
    with pytest.raises(MissingDownloadError, match=r"list_98pt_test_nothing\.txt"):
        read_wflw(
            tree["root"], file=TEST_LIST, subset_files={"x": "list_98pt_test_nothing.txt"}, bad=BadInput()
        )
    (tmp_path / "WFLW" / "WFLW_annotations").mkdir(parents=True)
    (tmp_path / "WFLW" / "WFLW_annotations" / "l_test.txt").write_text("")
    with pytest.raises(MissingDownloadError, match="WFLW_images"):
        read_wflw(tmp_path / "WFLW", file="WFLW_annotations/l_test.txt", bad=BadInput())


def test_prefix_from_the_file_name_or_given(tree):
    line = read_lines(tree["root"] / TEST_LIST)[0]
    rel = write_list(tree, "faces.txt", [line])
    with pytest.raises(ValueError, match="prefix"):
        read_wflw(tree["root"], file=rel, bad=BadInput())
    records = read_wflw(tree["root"], file=rel, prefix="wflw_val", bad=BadInput())
    assert [r.name for r in records] == ["wflw_val_0001"]


# ---------------------------------------------------------------------------------------------------------
# Crops and landmarks, bit for bit.


@pytest.mark.parametrize("gssl", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_crops_and_landmarks_match_the_official_arithmetic(tree, split, gssl):
    list_file = TRAIN_LIST if split == "train" else TEST_LIST
    records = read_wflw(tree["root"], file=list_file, gssl=gssl, bad=BadInput("raise"))
    lines = read_lines(tree["root"] / list_file)
    for record, fields in zip(records, lines, strict=True):
        image = record.image.load()
        crop, landmarks, box = ours(record, image)
        want_crop, want_landmarks, want_box = official_process_wflw(
            fields, tree["root"] / "WFLW_images", CROP_SIZE, gssl
        )
        assert (box.x0, box.y0, box.x1, box.y1) == want_box, record.name
        assert np.array_equal(crop, want_crop), record.name
        assert same_bits(landmarks, want_landmarks), record.name


def test_grayscale_images_become_three_equal_channels(tree):
    records = read_test(tree)
    index = next(i for i, e in enumerate(tree["test"]) if e["case"] == "grayscale")
    image = records[index].image.load()
    assert image.shape[2] == 3 and np.array_equal(image[..., 0], image[..., 2])


def test_points_outside_the_image_are_clipped_before_normalizing(tree):
    records = read_test(tree)
    for case, side in (("cut_top_left", "low"), ("cut_bottom_right", "high")):
        index = next(i for i, e in enumerate(tree["test"]) if e["case"] == case)
        record = records[index]
        image = record.image.load()
        height, width = image.shape[:2]
        _, landmarks, box = ours(record, image)
        raw = record.points
        if side == "low":
            outside = raw[:, 0] < 0
            assert outside.any() and (np.asarray(record.box[:2]) < 0).all()
            assert box.x0 == 0 and box.y0 == 0
            assert np.all(landmarks[outside, 0] == (0 - box.x0) / (box.x1 - box.x0))
        else:
            outside = raw[:, 0] > width
            assert outside.any() and record.box[2] > width - 1
            assert box.x1 == width - 1 and box.y1 == height - 1
            assert np.all(landmarks[outside, 0] == (width - box.x0) / (box.x1 - box.x0))
        inside = ~outside & (raw[:, 1] >= 0) & (raw[:, 1] <= height)
        assert same_bits(landmarks[inside, 0], (raw[inside, 0] - box.x0) / (box.x1 - box.x0))


def test_gssl_top_edge_float_boundary(tree):
    """y_min = 0, h = 10k: 0 + h * (1.2 - 1) / 2 lies just below k; a rounded 0.1 * h would give row k."""
    records = read_test(tree, gssl=True)
    record = records[0]
    x_min, y_min, x_max, y_max = record.box
    height = y_max - y_min
    assert y_min == 0 and height % 10 == 0
    image = record.image.load()
    _, _, box = ours(record, image)
    assert box.y0 == height * (1.2 - 1) / 2 and int(box.y0) == int(height * 0.1) - 1
    # and the supervised rule moves it up (clamped to 0)
    box_supervised, _ = WflwBox().apply(record.points, record.box, image.shape[1], image.shape[0])
    assert box_supervised.y0 == 0 and box.y0 > 0


def test_supervised_right_edge_float_boundary(tree):
    """x_min = -9, x_max = 1: 1 + 10 * (1.2 - 1) / 2 = 1.9999999999999998 -> crop column 1, not 2."""
    fields = list(read_lines(tree["root"] / TEST_LIST)[0])
    fields[196], fields[198] = "-9", "1"
    rel = write_list(tree, "edge_test.txt", [fields])
    (record,) = read_wflw(tree["root"], file=rel, bad=BadInput("raise"))
    image = record.image.load()
    crop, landmarks, box = ours(record, image)
    assert box.x1 == 1.9999999999999998 and int(box.x1) == 1 and int(1 + 10 * 0.1) == 2
    want_crop, want_landmarks, want_box = official_process_wflw(
        fields, tree["root"] / "WFLW_images", CROP_SIZE
    )
    assert want_box[2] == box.x1 and np.array_equal(crop, want_crop)
    assert same_bits(landmarks, want_landmarks)


# ---------------------------------------------------------------------------------------------------------
# 98 -> 68, unlabeled, the YAML files.


def test_wflw98_to_68_matches_the_official_loop():
    rng = np.random.default_rng(7)
    batch = rng.uniform(-0.2, 1.2, size=(3, 98, 2))
    got = wflw98_to_68(batch)
    assert got.shape == (3, 68, 2)
    for face, converted in zip(batch, got, strict=True):
        assert same_bits(converted, official_convert_wflw(face.tolist()))
    # The eyelid weights sum to 0.999, as officially: an eye at a constant point moves slightly.
    flat = np.ones((98, 2))
    assert wflw98_to_68(flat)[37, 0] == 0.666 + 0.333 != 1.0
    with pytest.raises(ValueError, match="98, 2"):
        wflw98_to_68(np.zeros((68, 2)))


def test_convert_wflw68_on_the_gssl_test_crops(tree):
    records = read_test(tree, gssl=True, convert="wflw68")
    lines = read_lines(tree["root"] / TEST_LIST)
    for record, fields in zip(records, lines, strict=True):
        image = record.image.load()
        _, landmarks, _ = ours(record, image)
        _, official98, _ = official_process_wflw(fields, tree["root"] / "WFLW_images", CROP_SIZE, gssl=True)
        assert same_bits(landmarks, official_convert_wflw(official98.tolist())), record.name
    with pytest.raises(ValueError, match="unknown WFLW landmark conversion"):
        read_test(tree, convert="wflw69")


def test_unlabeled_records_keep_the_box_only(tree):
    labeled = read_wflw(tree["root"], file=TRAIN_LIST, gssl=True, bad=BadInput())
    pool = read_wflw(tree["root"], file=TRAIN_LIST, gssl=True, unlabeled=True, bad=BadInput())
    assert [r.name for r in pool] == [r.name for r in labeled]
    for record, reference in zip(pool, labeled, strict=True):
        assert record.points is None and record.box == reference.box
        box, landmarks = record.rule.apply(record.points, record.box, 96, 96)
        assert landmarks is None
        assert box == reference.rule.apply(reference.points, reference.box, 96, 96)[0]


def test_scheme_yaml_matches_the_official_flip_and_norms():
    scheme = load_landmark_scheme("wflw98")
    assert scheme.num_landmarks == 98
    assert list(scheme.flip_permutation) == OFFICIAL_WFLW_FLIP
    assert scheme.norm_indices("inter_ocular") == ((60,), (72,))
    assert scheme.norm_indices("inter_pupil") == ((96,), (97,))
    covered = sorted(i for lo, hi in scheme.groups.values() for i in range(lo, hi + 1))
    assert covered == list(range(98))


def test_dataset_yaml_splits_read_the_tree_and_select_the_subsets(tree):
    meta = yaml.safe_load((META_DIR / "wflw.yaml").read_text())
    assert meta["landmarks"] == "wflw98" and meta["format"] == "wflw" and meta["dir"] == "WFLW"
    assert list(meta["metrics"]) == ["nme_io", "nme_ip"]
    assert meta["metrics"] == {"nme_io": "inter_ocular", "nme_ip": "inter_pupil"}
    splits = {
        name: read_wflw(tree["root"], bad=BadInput("raise"), **spec) for name, spec in meta["splits"].items()
    }
    assert len(splits[meta["train"]]) == 4 and len(splits["test"]) == 7
    flag_of = {"pose": "largepose", **{flag: flag for flag in FLAGS if flag != "pose"}}
    assert set(meta["test"]) == {"full", *flag_of}
    assert meta["test"]["full"] == "test"
    for subset, file_name in flag_of.items():
        selection = meta["test"][subset]
        assert selection["split"] == "test"
        ((key, value),) = selection["where"].items()
        chosen = [i for i, r in enumerate(splits["test"]) if r.attributes[key] == value]
        assert chosen == tree["subsets"][file_name], subset
