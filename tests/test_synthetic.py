"""Synthetic faces: determinism, landmark semantics, drawn features, 300W on-disk format, manifest cache."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipnet_lit.datasets.pts import read_pts
from pipnet_lit.datasets.readers.w300 import crop_300w, list_pts_folder
from pipnet_lit.datasets.records import BadInput, load_image_bgr
from pipnet_lit.synthetic import faces
from pipnet_lit.synthetic.__main__ import main as cli_main
from pipnet_lit.synthetic.faces import (
    FaceParams,
    face_landmarks,
    generate_dataset,
    render_face,
    sample_face_params,
    template_68,
)

SMALL = dict(n_train=3, n_common=2, n_challenge=2, n_wild=2, image_size=96, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(root, seed=7, **SMALL)
    return root


def _frontal(**changes) -> FaceParams:
    base = FaceParams(
        image_size=128,
        style="clean",
        yaw=0.0,
        pitch=0.0,
        roll=0.0,
        scale=40.0,
        cx=64.0,
        cy=46.0,
        skin=(160.0, 205.0, 245.0),
        lips=(90.0, 80.0, 210.0),
        brows=(20.0, 30.0, 40.0),
        iris=(150.0, 110.0, 40.0),
        background="gradient",
        bg_colours=((40.0, 160.0, 40.0), (40.0, 120.0, 40.0)),
    )
    return dataclasses.replace(base, **changes)


def _pixel(image: np.ndarray, point: np.ndarray) -> np.ndarray:
    x, y = np.floor(point).astype(int)  # continuous coordinates: pixel i spans [i, i + 1)
    return image[y, x].astype(float)


def test_template_layout_is_ibug68() -> None:
    t = template_68()
    assert t.shape == (68, 2)
    np.testing.assert_allclose(t[:17, 0], -t[16::-1, 0])  # jaw symmetric, 0 on the image's left
    assert np.all(np.diff(t[:9, 1]) > 0) and np.argmax(t[:, 1]) == 8
    # Subject's right eye (36-41) on the image's left; corners 36/39 and 42/45.
    assert t[36, 0] < t[39, 0] < t[42, 0] < t[45, 0]
    assert t[17:22, 0].max() < t[22:27, 0].min() and np.all(np.diff(t[17:27, 0]) > 0)
    assert np.all(np.diff(t[27:31, 1]) > 0) and np.all(np.diff(t[31:36, 0]) > 0)
    assert t[48, 0] < t[51, 0] == 0 < t[54, 0] and t[57, 1] > t[51, 1]
    assert t[60, 0] < t[62, 0] < t[64, 0] and t[66, 1] > t[62, 1]


def test_frontal_landmark_semantics() -> None:
    lms = face_landmarks(_frontal())
    assert lms[36, 0] < lms[39, 0] < lms[42, 0] < lms[45, 0]
    assert lms[17:27, 1].max() < lms[36:48, 1].min()  # brows above eyes
    assert lms[30, 1] < lms[33, 1] < lms[51, 1] < lms[57, 1]  # nose tip, nostrils, mouth downwards
    assert int(np.argmax(lms[:, 1])) == 8  # chin lowest
    np.testing.assert_allclose(
        lms[:, 0] - 64.0, -(lms[faces_flip(), 0] - 64.0), atol=1e-9
    )  # mirror symmetric


def faces_flip() -> list[int]:
    """iBUG-68 mirror permutation (written out here, independent of the package's meta files)."""
    jaw = list(range(16, -1, -1))
    brows = list(range(26, 16, -1))
    nose = [27, 28, 29, 30, 35, 34, 33, 32, 31]
    eyes = [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    lips = [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
    return jaw + brows + nose + eyes + lips


def test_pose_and_expression_move_the_right_points() -> None:
    turned = face_landmarks(_frontal(yaw=30.0))
    # The nose swings toward +x, and the side it turns to is compressed between eye and jaw outline.
    assert turned[30, 0] - turned[27, 0] > 3.0
    assert abs(turned[16, 0] - turned[45, 0]) < abs(turned[36, 0] - turned[0, 0]) - 3.0
    rolled = face_landmarks(_frontal(roll=20.0))
    assert rolled[45, 1] < rolled[36, 1]  # counter-clockwise on screen: the right-hand eye goes up
    open_mouth = face_landmarks(_frontal(mouth_open=1.0))
    closed = face_landmarks(_frontal())
    assert open_mouth[66, 1] - open_mouth[62, 1] > closed[66, 1] - closed[62, 1] + 8.0
    blink = face_landmarks(_frontal(blink=0.7))
    assert blink[41, 1] - blink[37, 1] < 0.5 * (closed[41, 1] - closed[37, 1])
    raised = face_landmarks(_frontal(brow_raise=1.0))
    assert np.all(raised[17:27, 1] < closed[17:27, 1] - 2.0)
    np.testing.assert_array_equal(raised[:17], closed[:17])


def test_features_are_drawn_on_their_landmarks() -> None:
    p = _frontal()
    image, lms = render_face(p)
    np.testing.assert_array_equal(lms, face_landmarks(p))
    skin = np.array(p.skin)
    cheek = _pixel(image, (lms[2] + lms[31]) / 2)
    np.testing.assert_allclose(cheek, skin, atol=2)
    for eye in (slice(36, 42), slice(42, 48)):
        centre = _pixel(image, lms[eye].mean(axis=0))
        assert np.abs(centre - skin).sum() > 150  # pupil / iris, not skin
        assert centre.max() < 60  # the pupil sits at the eye centre when gaze is (0, 0)
        outer = lms[eye][[0, 1, 5]] if eye.start == 36 else lms[eye][[3, 4, 2]]  # corner + its two lid points
        sclera = _pixel(image, outer.mean(axis=0))
        assert sclera[0] > skin[0] + 30 and sclera.min() > 190  # whiter and bluer than the skin
    for k in (19, 24):
        np.testing.assert_allclose(_pixel(image, lms[k]), p.brows, atol=3)
    np.testing.assert_allclose(_pixel(image, (lms[51] + lms[62]) / 2), p.lips, atol=3)
    np.testing.assert_allclose(_pixel(image, (lms[57] + lms[66]) / 2), p.lips, atol=3)
    assert np.abs(_pixel(image, lms[33]) - skin).sum() > 100  # the nostril line
    # Just outside the jaw: background (green), just inside: skin.
    out_pt = lms[8] + np.array([0.0, 2.0])
    in_pt = lms[8] - np.array([0.0, 2.0])
    assert np.abs(_pixel(image, in_pt) - skin).sum() < 10
    assert np.abs(_pixel(image, out_pt) - skin).sum() > 40


@pytest.mark.parametrize(("roll", "tol"), [(0.0, 0.02), (90.0, 0.1)])
def test_pixel_convention_symmetric_face_centred_on_cx(roll: float, tol: float) -> None:
    """A mirror-symmetric face on a flat background: its drawn mass is centred on the symmetry axis.

    Continuous coordinates put pixel i's centre at i + 0.5; drawing with the wrong convention would move
    the centroid by half a pixel.
    """
    bg = (40.0, 160.0, 40.0)
    p = _frontal(bg_colours=(bg, bg), roll=roll, cy=64.0, scale=30.0, mouth_open=0.6, blink=0.3)
    image, _ = render_face(p)
    weight = np.abs(image.astype(float) - np.array(bg)).sum(axis=2)
    centres = np.arange(128) + 0.5
    axis = 1 if roll == 0.0 else 0  # roll 90: the symmetry axis becomes the row y = cy
    profile = weight.sum(axis=1 - axis)
    assert abs((profile * centres).sum() / profile.sum() - 64.0) < tol


def test_render_is_fast_and_pure() -> None:
    rng = np.random.default_rng(0)
    params = [
        sample_face_params(rng, style, 128) for style in ("clean", "challenge", "wild") for _ in range(10)
    ]
    render_face(params[0])
    start = time.perf_counter()
    images = [render_face(p)[0] for p in params]
    per_image = (time.perf_counter() - start) / len(params)
    assert per_image < 0.015, f"{per_image * 1e3:.1f} ms per 128 px image"  # ~3 ms here; lenient for CI
    np.testing.assert_array_equal(render_face(params[5])[0], images[5])
    assert all(im.shape == (128, 128, 3) and im.dtype == np.uint8 for im in images)


def test_sampled_faces_fill_the_requested_fraction() -> None:
    for i in range(20):
        style = ("clean", "challenge", "wild")[i % 3]
        p = sample_face_params(np.random.default_rng(i), style, 100, face_fraction=(0.45, 0.6))
        lms = face_landmarks(p)
        span = (lms.max(axis=0) - lms.min(axis=0)).max()
        assert 44.9 < span < 60.1
        assert lms.min() >= 4.0 - 1e-9 and lms.max() <= 96.0 + 1e-9
    with pytest.raises(ValueError, match="unknown synthetic style 'cartoon'"):
        sample_face_params(np.random.default_rng(0), "cartoon")
    with pytest.raises(ValueError, match="face_fraction"):
        sample_face_params(np.random.default_rng(0), "clean", face_fraction=(0.8, 0.5))


def test_dataset_layout_and_pts(dataset: Path) -> None:
    manifest = json.loads((dataset / "synthetic.json").read_text())
    assert manifest["counts"] == {"trainset": 3, "common": 2, "challenge": 2, "wild": 2}
    assert manifest["image_size"] == 96 and manifest["seed"] == 7 and manifest["image_format"] == "png"
    for split, n in manifest["counts"].items():
        pairs = list_pts_folder(dataset, split, BadInput("raise"))
        assert [i.name for i, _ in pairs] == [f"synth_{k:05d}.png" for k in range(n)]
        for image_path, pts_path in pairs:
            pts = read_pts(pts_path)
            assert pts.shape == (68, 2)
            assert load_image_bgr(image_path).shape == (96, 96, 3)
            if split in ("trainset", "common"):
                # 1-based pixels: continuous [0, 96] is [0.5, 96.5]; the sampler keeps a 4% margin.
                assert pts.min() > 0.5 + 3.8 and pts.max() < 96.5 - 3.8
                assert pts[36, 0] < pts[39, 0] < pts[42, 0] < pts[45, 0]


def test_pts_are_continuous_plus_half(tmp_path: Path) -> None:
    generate_dataset(
        tmp_path, n_train=1, n_common=0, n_challenge=0, n_wild=0, image_size=64, seed=3, progress=False
    )
    p = sample_face_params(np.random.default_rng([3, 0, 0]), "clean", 64, (0.4, 0.7))
    np.testing.assert_allclose(
        read_pts(tmp_path / "trainset/synth_00000.pts"), face_landmarks(p) + 0.5, atol=5e-5
    )
    image = cv2.imread(str(tmp_path / "trainset/synth_00000.png"))
    np.testing.assert_array_equal(image, render_face(p)[0])


def test_same_seed_same_bytes_other_seed_other_bytes(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_dataset(again, seed=7, **SMALL)
    assert _files(again) == _files(dataset)
    other = tmp_path / "other"
    generate_dataset(other, seed=8, **SMALL)
    a, b = _files(dataset), _files(other)
    assert a.keys() == b.keys()
    differing = [k for k in a if k.endswith(".png") and a[k] != b[k]]
    assert len(differing) == 9


def test_splits_have_their_styles(tmp_path: Path) -> None:
    generate_dataset(
        tmp_path, n_train=0, n_common=6, n_challenge=6, n_wild=6, image_size=64, seed=1, progress=False
    )

    def yaw_proxy(split: str) -> float:
        out = []
        for _, pts_path in list_pts_folder(tmp_path, split, BadInput("raise")):
            p = read_pts(pts_path)
            out.append(abs(np.degrees(np.arctan2(p[45, 1] - p[36, 1], p[45, 0] - p[36, 0]))))
        return float(np.mean(out))

    assert yaw_proxy("challenge") > yaw_proxy("common")  # heavier roll in the challenge style


def test_wild_style_shifts_imaging_conditions_not_pose() -> None:
    # The self-training pool / cross-domain test: same pose and expression ranges as the clean faces
    # (so a clean-trained model is a usable teacher), other imaging conditions.
    def draw(style: str) -> list[FaceParams]:
        rng = np.random.default_rng(7)
        return [sample_face_params(rng, style, 128) for _ in range(300)]

    clean, wild = draw("clean"), draw("wild")
    for name, bound in (("yaw", 22.0), ("pitch", 8.0), ("roll", 12.0)):
        wild_max = max(abs(getattr(p, name)) for p in wild)
        clean_max = max(abs(getattr(p, name)) for p in clean)
        assert bound * 0.9 < wild_max <= bound and bound * 0.9 < clean_max <= bound, name
    assert all(p.blur_sigma == 0 and p.noise_sigma == 0 and not p.grayscale for p in clean)
    assert 0.6 < np.mean([p.blur_sigma > 0 for p in wild]) < 0.8
    assert 0.6 < np.mean([p.noise_sigma > 0 for p in wild]) < 0.8
    assert 0.1 < np.mean([p.grayscale for p in wild]) < 0.3
    assert np.mean([len(p.occluders) > 0 for p in wild]) > 3 * np.mean([len(p.occluders) > 0 for p in clean])


def test_manifest_cache_hit_and_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "synth"
    counts = generate_dataset(root, seed=0, **SMALL)
    assert counts == {"trainset": 3, "common": 2, "challenge": 2, "wild": 2}
    (root / "keep_me.txt").write_text("other content")
    before = _files(root)

    def boom(*args, **kwargs):
        raise AssertionError("cache hit expected: nothing may be rendered")

    with monkeypatch.context() as m:
        m.setattr(faces, "render_face", boom)
        assert generate_dataset(root, seed=0, **SMALL) == counts
    assert _files(root) == before

    smaller = dict(SMALL, n_train=1)
    generate_dataset(root, seed=0, **smaller)
    assert sorted(p.name for p in (root / "trainset").iterdir()) == ["synth_00000.png", "synth_00000.pts"]
    assert (root / "common/synth_00001.png").read_bytes() == before["common/synth_00001.png"]  # index-seeded
    assert json.loads((root / "synthetic.json").read_text())["counts"]["trainset"] == 1
    assert (root / "keep_me.txt").read_text() == "other content"
    assert not [p for p in root.iterdir() if "tmp" in p.name]

    # A missing split folder is not a cache hit.
    shutil.rmtree(root / "wild")
    generate_dataset(root, seed=0, **smaller)
    assert len(list((root / "wild").glob("*.pts"))) == 2


def test_interrupted_generation_leaves_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = faces.render_face

    def flaky(p):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(p)

    monkeypatch.setattr(faces, "render_face", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, seed=0, **SMALL)
    assert not (tmp_path / "synthetic.json").exists()
    assert list(tmp_path.iterdir()) == []


def test_output_goes_through_the_300w_crop(dataset: Path) -> None:
    for split in ("trainset", "challenge", "wild"):
        for image_path, pts_path in list_pts_folder(dataset, split, BadInput("raise")):
            crop, lms, (x, y, w, h) = crop_300w(load_image_bgr(image_path), read_pts(pts_path), 64)
            assert crop.shape == (64, 64, 3)
            assert 0.3 * 96 < max(w, h) < 0.85 * 96
            assert lms.min() >= 0.0 and lms.max() <= 1.0


def test_jpg_format_and_argument_errors(tmp_path: Path) -> None:
    generate_dataset(
        tmp_path, n_train=1, n_common=0, n_challenge=0, n_wild=0, image_format="jpg", progress=False
    )
    assert (tmp_path / "trainset/synth_00000.jpg").read_bytes()[:2] == b"\xff\xd8"
    with pytest.raises(ValueError, match="image_format"):
        generate_dataset(tmp_path, n_train=1, n_common=0, n_challenge=0, n_wild=0, image_format="gif")
    with pytest.raises(ValueError, match="the wild count"):
        generate_dataset(tmp_path, n_train=1, n_common=0, n_challenge=0, n_wild=-1)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--n-train", "2", "--n-common", "1", "--n-challenge", "1", "--n-wild", "0"]
    assert cli_main([*argv, "--size", "64", "--seed", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"{out}/trainset: 2 images" in printed and "synthetic.json" in printed
    assert len(list((out / "trainset").glob("*.png"))) == 2
    assert json.loads((out / "synthetic.json").read_text())["seed"] == 4
    assert cli_main([*argv, "--size", "8"]) == 2
    assert "image_size" in capsys.readouterr().err
