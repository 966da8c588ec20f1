"""Dataset facts are data: the built-in YAML files load, validate, and bad files fail with clear errors."""

from __future__ import annotations

import pytest

from pipnet_lit.datasets.meta import MetaError, load_dataset_meta, load_landmark_scheme

OFFICIAL_300W_FLIP_1BASED = [
    17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 28,
    29, 30, 31, 36, 35, 34, 33, 32, 46, 45, 44, 43, 48, 47, 40, 39, 38, 37, 42, 41, 55, 54, 53, 52, 51,
    50, 49, 60, 59, 58, 57, 56, 65, 64, 63, 62, 61, 68, 67, 66,
]  # fmt: skip


def test_ibug68_flip_matches_official_points_flip():
    scheme = load_landmark_scheme("ibug68")
    assert scheme.num_landmarks == 68
    assert list(scheme.flip_permutation) == [i - 1 for i in OFFICIAL_300W_FLIP_1BASED]
    assert scheme.norm_indices("inter_ocular") == ((36,), (45,))
    assert scheme.norm_indices("inter_pupil") == (tuple(range(36, 42)), tuple(range(42, 48)))


def test_300w_splits_match_the_paper_protocol():
    meta = load_dataset_meta("300w")
    assert meta.train == ("train",) and meta.unlabeled == ()
    train, test = meta.splits["train"], meta.splits["test"]
    assert (train.format, train.dir) == ("300w", "300W")
    assert train.args == {"folders": ["afw", "helen/trainset", "lfpw/trainset"], "scale": 1.1}
    assert test.args["folders"] == ["helen/testset", "lfpw/testset", "ibug"]
    # full, common and challenge are selections of one test split (its images are evaluated once)
    assert list(meta.test) == ["full", "common", "challenge"]
    assert {s.split for s in meta.test.values()} == {"test"}
    assert meta.test["full"].where is None
    assert meta.test["common"].where == {"folder": ("helen/testset", "lfpw/testset")}
    assert meta.test["challenge"].where == {"folder": ("ibug",)}
    assert meta.default_norm == "inter_ocular"
    assert [(m.key, m.norm, m.indices) for m in meta.metrics] == [
        ("nme_io", "inter_ocular", ((36,), (45,))),
        ("nme_ip", "inter_pupil", (tuple(range(36, 42)), tuple(range(42, 48)))),
    ]


def test_self_training_sets_compose_several_downloads():
    meta = load_dataset_meta("300w_celeba")
    assert meta.splits["train"].args["scale"] == 1.3 and meta.splits["test_300w"].args["scale"] == 1.3
    assert {k: s.split for k, s in meta.test.items()} == {
        "300w_full": "test_300w",
        "cofw68": "test_cofw68",
        "wflw68": "test_wflw68",
    }
    assert [meta.splits[k].format for k in ("test_cofw68", "test_wflw68", "celeba")] == [
        "cofw68",
        "wflw",
        "celeba",
    ]
    assert meta.unlabeled == ("celeba",) and meta.dirs() == ["300W", "COFW68", "CelebA", "WFLW"]
    other = load_dataset_meta("300w_cofw_wflw")
    assert other.unlabeled == ("cofw_train", "wflw_train")
    assert other.splits["cofw_train"].args == {
        "mat": "COFW_train_color.mat",
        "part": "train",
        "scale": 1.3,
        "unlabeled": True,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("splits: {a: {}}\ntrain: a\n", "has no 'format'"),
        ("format: nope\nsplits: {a: {}}\n", "unknown format 'nope'"),
        ("format: 300w\nsplits: {a: {}}\ntrain: b\n", "train: split 'b' is not defined"),
        ("format: 300w\nsplits: {a: {}}\ntest: {x: {split: c}}\n", "test.x uses split 'c'"),
        ("format: 300w\nsplits: {a: {}}\ntest: {x: {split: a, when: 1}}\n", "unknown key"),
        (
            "format: 300w\nsplits: {a: {}}\nmetrics: {nme_io: inter_eye}\n",
            "unknown normalization 'inter_eye'",
        ),
        ("format: 300w\nsplits: {a: {}}\nmetrics: {io: none}\n", "start with 'nme_'"),
    ],
)
def test_bad_dataset_yaml_names_file_and_key(tmp_path, body, message):
    path = tmp_path / "bad_dataset.yaml"
    path.write_text("landmarks: ibug68\n" + body)
    with pytest.raises(MetaError, match=message) as err:
        load_dataset_meta(str(path))
    assert str(path) in str(err.value)


def test_unknown_name_lists_known_ones():
    with pytest.raises(MetaError, match="known:.*300w"):
        load_dataset_meta("no_such_dataset")


def test_custom_scheme_from_yaml_path(tmp_path):
    path = tmp_path / "five.yaml"
    path.write_text(
        "num_landmarks: 5\nflip_permutation: [1, 0, 2, 4, 3]\nnorms:\n  inter_ocular: [[0], [1]]\n"
    )
    scheme = load_landmark_scheme(str(path))
    assert scheme.num_landmarks == 5 and scheme.flip_permutation == (1, 0, 2, 4, 3)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("num_landmarks: 3\nflip_permutation: [0, 1]\n", "permutation of 0..2"),
        ("num_landmarks: 3\nflip_permutation: [1, 2, 0]\n", "applying it twice"),
        ("flip_permutation: [0]\n", "missing key 'num_landmarks'"),
        (
            "num_landmarks: 2\nflip_permutation: [0, 1]\nnorms:\n  inter_ocular: [[0], [7]]\n",
            "norms.inter_ocular",
        ),
    ],
)
def test_bad_scheme_errors_name_the_file_and_key(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(MetaError, match=message) as err:
        load_landmark_scheme(str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "body",
    [
        "num_landmarks: 2\nflip_permutation: 5\n",
        "num_landmarks: 2\nflip_permutation: [0, 1]\nnorms:\n  io: 5\n",
    ],
)
def test_wrongly_typed_scheme_is_a_meta_error_naming_the_file(tmp_path, body):
    path = tmp_path / "typed.yaml"
    path.write_text(body)
    with pytest.raises(MetaError, match="malformed landmark scheme") as err:
        load_landmark_scheme(str(path))
    assert str(path) in str(err.value)


def test_dataset_yaml_finds_its_scheme_relative_to_itself(tmp_path, monkeypatch):
    (tmp_path / "three.yaml").write_text("num_landmarks: 3\nflip_permutation: [1, 0, 2]\n")
    (tmp_path / "mine.yaml").write_text(
        "landmarks: three.yaml\nformat: table\nmetrics: {nme_raw: none}\n"
        "splits:\n  a: {file: t.csv}\n  b: {file: u.csv}\ntrain: a\ntest:\n  all: b\n"
    )
    monkeypatch.chdir("/")
    meta = load_dataset_meta(str(tmp_path / "mine.yaml"))
    assert meta.landmarks.num_landmarks == 3 and meta.test["all"].split == "b"
    assert meta.default_norm == "none" and meta.splits["a"].args == {"file": "t.csv"}
