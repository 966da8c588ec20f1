"""Tests for pipnet_lit.datasets.transforms: each official augmentation step against hand-computed values
and PIL (the official implementation's image library), plus seeding, worker streams and input errors."""

from __future__ import annotations

import copy
import random
from types import SimpleNamespace

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset

from pipnet_lit.datasets.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OfficialTranslate,
    build_eval_transform,
    build_train_transform,
    validate_flip_permutation,
)

S = 64
# Official lib/train.py points_flip for data_300W (1-based), made 0-based here.
_POINTS_FLIP_300W = [
    17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
    28, 29, 30, 31, 36, 35, 34, 33, 32, 46, 45, 44, 43, 48, 47, 40, 39, 38, 37, 42, 41,
    55, 54, 53, 52, 51, 50, 49, 60, 59, 58, 57, 56, 65, 64, 63, 62, 61, 68, 67, 66,
]  # fmt: skip
FLIP68 = [i - 1 for i in _POINTS_FLIP_300W]
OFF = dict(translate_p=0.0, occlusion_p=0.0, flip_p=0.0, rotate_p=0.0, blur_p=0.0, gray_p=0.0)


class ScriptedRandom(random.Random):
    """A `random.Random` whose `random()` returns the given values in order (uniform() uses it too)."""

    def __init__(self, values: list[float]):
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        assert self.values, "the pipeline drew more random numbers than the test scripted"
        return self.values.pop(0)


def script(transform, *values: float) -> ScriptedRandom:
    """Drive the pipeline's shared py_random; the first value feeds Compose's own p-check (p = 1)."""
    rnd = ScriptedRandom([0.0, *values])
    transform.compose.set_random_state(np.random.default_rng(0), rnd)
    return rnd


def train(**kwargs):
    return build_train_transform(S, kwargs.pop("perm", FLIP68), **{**OFF, **kwargs})


def to_rgb_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Undo ImageNet normalization: (3, H, W) float32 -> (H, W, 3) uint8 RGB."""
    img = tensor.numpy().transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def random_bgr(seed: int = 0, size: int = S) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def random_landmarks(n: int = 68, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, (n, 2))


def centre(px: float) -> float:
    """Normalized continuous coordinate of pixel index `px`'s centre in an S-pixel crop."""
    return (px + 0.5) / S


# --- albumentations' own convention (what the module's coordinate shift compensates) ----------------------


def test_albumentations_works_in_pixel_index_coordinates():
    img = np.zeros((S, S, 3), np.uint8)
    img[5, 10] = 255
    kp = A.KeypointParams(format="xy", remove_invisible=False)
    out = A.Compose([A.HorizontalFlip(p=1)], keypoint_params=kp)(image=img, keypoints=np.array([[10.0, 5.0]]))
    assert np.argwhere(out["image"][..., 0]).tolist() == [[5, S - 1 - 10]]
    np.testing.assert_allclose(out["keypoints"][0, :2], [S - 1 - 10, 5])  # x -> W - 1 - x
    img = np.zeros((S, S, 3), np.uint8)
    img[10, 50] = 255
    rot = A.Rotate(limit=(90, 90), interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, p=1)
    out = A.Compose([rot], keypoint_params=kp)(image=img, keypoints=np.array([[50.0, 10.0]]))
    # About ((W-1)/2, (H-1)/2) = (31.5, 31.5), counter-clockwise on screen: (50, 10) -> (10, 13).
    assert np.argwhere(out["image"][..., 0]).tolist() == [[13, 10]]
    np.testing.assert_allclose(out["keypoints"][0, :2], [10, 13], atol=1e-4)


# --- each step on its own ----------------------------------------------------------------------------------


def test_translate_moves_pixel_and_landmark_together_and_clips():
    t = train(translate_p=1.0)
    bgr = random_bgr()
    bgr[10, 30] = (0, 0, 255)
    lms = np.tile([[0.5, 0.5]], (68, 1))
    lms[0] = [centre(30), centre(10)]
    lms[1] = [0.2, 0.9]  # pushed out on both axes -> clipped to (0, 1)
    rnd = script(t, 0.91, 0.09)  # official: c = int(0.41 * 60) = 24, f = int(-0.41 * 60) = -24
    tensor, out = t(bgr, lms)
    assert rnd.values == []
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    expected = np.zeros_like(rgb)  # content moves by (-24, +24), black fill
    expected[24:, : S - 24] = rgb[: S - 24, 24:]
    got = to_rgb_uint8(tensor)
    np.testing.assert_array_equal(got, expected)
    pil = np.asarray(Image.fromarray(rgb).transform((S, S), Image.AFFINE, (1, 0, 24, 0, 1, -24)))
    np.testing.assert_array_equal(got, pil)
    assert tuple(got[34, 6]) == (255, 0, 0)
    np.testing.assert_allclose(out[0], [centre(6), centre(34)], atol=1e-6)
    np.testing.assert_array_equal(out[1], [0.0, 1.0])
    np.testing.assert_allclose(out[2:], np.clip(lms[2:] + [-24 / S, 24 / S], 0, 1), atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (68, 2)


def test_translate_offsets_follow_the_official_distribution():
    step = OfficialTranslate(max_px=30, p=1.0)
    step.set_random_seed(0)
    shifts = np.array([list(step.get_params().values()) for _ in range(6000)]).ravel()
    assert shifts.min() == -29 and shifts.max() == 29  # int() truncation: +-30 is never reached
    p0, p5 = np.mean(shifts == 0), np.mean(shifts == 5)
    assert 0.028 < p0 < 0.039  # 2/60: (-1, 1) truncates to 0
    assert 0.012 < p5 < 0.022  # 1/60


def test_flip_mirrors_and_permutes_68_points():
    t = train(flip_p=1.0)
    bgr = np.zeros((S, S, 3), np.uint8)
    bgr[20, 10] = (0, 255, 0)
    lms = random_landmarks()
    lms[36] = [centre(10), centre(20)]  # right eye outer corner on the marked pixel
    script(t)
    tensor, out = t(bgr, lms)
    got = to_rgb_uint8(tensor)
    assert np.argwhere(got[..., 1]).tolist() == [[20, S - 1 - 10]]
    np.testing.assert_array_equal(
        got, np.asarray(Image.fromarray(bgr[..., ::-1]).transpose(Image.FLIP_LEFT_RIGHT))
    )
    # Landmark 45 (left eye outer corner) of the flipped face is the mirrored landmark 36: on the pixel.
    np.testing.assert_allclose(out[45], [centre(S - 1 - 10), centre(20)], atol=1e-6)
    np.testing.assert_allclose(out[45], [1 - lms[36, 0], lms[36, 1]], atol=1e-6)
    expected = np.empty_like(lms)
    for k in range(68):  # official random_flip, one landmark at a time
        expected[k] = [1.0 - lms[FLIP68[k], 0], lms[FLIP68[k], 1]]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert not np.allclose(out, np.c_[1 - lms[:, 0], lms[:, 1]], atol=1e-3)  # skipping the permutation fails


def test_no_flip_means_no_permutation():
    t = train(flip_p=0.0)
    lms = random_landmarks()
    script(t)
    _, out = t(random_bgr(), lms)
    np.testing.assert_allclose(out, lms, atol=1e-6)


def official_rotate(lms: np.ndarray, theta: float) -> np.ndarray:
    """The official random_rotate landmark formula (normalized coordinates, no clipping)."""
    c, s = np.cos(theta), np.sin(theta)
    return (lms - 0.5) @ np.array([[c, -s], [s, c]]) + 0.5


def test_rotate_90_moves_pixel_and_landmark_to_the_same_place():
    t = train(rotate_p=1.0, rotate_deg=90)
    bgr = np.zeros((S, S, 3), np.uint8)
    bgr[10, 50] = (255, 0, 0)
    lms = random_landmarks()
    lms[0] = [centre(50), centre(10)]
    script(t, 1.0)  # uniform(-90, 90) -> +90 (counter-clockwise, like PIL)
    tensor, out = t(bgr, lms)
    got = to_rgb_uint8(tensor)
    # About the crop centre (32, 32) in continuous pixels: (50.5, 10.5) -> (10.5, 13.5), pixel (x 10, y 13).
    assert np.argwhere(got[..., 2]).tolist() == [[13, 10]]
    np.testing.assert_allclose(out[0], [centre(10), centre(13)], atol=1e-5)
    np.testing.assert_allclose(out, official_rotate(lms, np.pi / 2), atol=1e-5)
    np.testing.assert_array_equal(got, np.asarray(Image.fromarray(bgr[..., ::-1]).rotate(90)))


def test_rotate_15_matches_official_formula_and_pil():
    t = train(rotate_p=1.0, rotate_deg=30)
    bgr = random_bgr() // 2
    bgr[14:19, 44:49] = (0, 0, 255)  # a 5x5 marker centred on pixel (46, 16)
    lms = random_landmarks()
    lms[0] = [centre(46), centre(16)]
    lms[1] = [0.02, 0.02]  # rotates out of the crop: kept, not clipped
    script(t, 0.75)  # uniform(-30, 30) -> 15 degrees
    tensor, out = t(bgr, lms)
    expected = official_rotate(lms, np.radians(15.0))
    assert expected[1, 0] < 0
    np.testing.assert_allclose(out, expected, atol=1e-5)
    got = to_rgb_uint8(tensor)
    ys, xs = np.nonzero(got[..., 0] == 255)
    assert 20 <= len(xs) <= 30
    np.testing.assert_allclose([(xs.mean() + 0.5) / S, (ys.mean() + 0.5) / S], out[0], atol=0.5 / S)
    pil = np.asarray(Image.fromarray(bgr[..., ::-1]).rotate(15.0))
    assert (got != pil).any(-1).mean() < 0.01  # nearest-neighbour rounding ties only


def test_occlusion_fills_the_official_rectangle_and_never_moves_landmarks():
    t = train(occlusion_p=1.0)
    bgr = random_bgr()
    lms = random_landmarks()
    # h = int(64*0.4*0.5) = 12, w = 12, x0 = int((64-12-10)*0.25) = 10, y0 = int(42*0.5) = 21,
    # colour drawn B, G, R: int(0.21*255) = 53, int(0.41*255) = 104, int(0.61*255) = 155.
    rnd = script(t, 0.5, 0.5, 0.25, 0.5, 0.21, 0.41, 0.61)
    tensor, out = t(bgr, lms)
    assert rnd.values == []
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    expected[21:33, 10:22] = (155, 104, 53)
    np.testing.assert_array_equal(to_rgb_uint8(tensor), expected)
    np.testing.assert_allclose(out, lms, atol=1e-6)


def test_random_occlusions_are_one_colour_rectangles_within_bounds():
    t = train(occlusion_p=1.0, seed=3)
    bgr = np.full((S, S, 3), 7, np.uint8)
    lms = random_landmarks()
    for _ in range(20):
        tensor, out = t(bgr, lms)
        np.testing.assert_allclose(out, lms, atol=1e-6)
        changed = np.argwhere((to_rgb_uint8(tensor) != 7).any(-1))
        if len(changed) == 0:
            continue  # empty rectangle (int() of a small size) or a colour of exactly 7
        (y0, x0), (y1, x1) = changed.min(0), changed.max(0)
        patch = to_rgb_uint8(tensor)[y0 : y1 + 1, x0 : x1 + 1].reshape(-1, 3)
        assert (patch == patch[0]).all()
        assert y1 - y0 + 1 <= int(S * 0.4) and x1 - x0 + 1 <= int(S * 0.4)
        assert x1 < S - 10 and y1 < S - 10


def test_blur_matches_pil_gaussian_blur_and_keeps_landmarks():
    t = train(blur_p=1.0, blur_max_sigma=5.0)
    bgr = cv2.GaussianBlur(random_bgr(), (0, 0), 1.5)
    lms = random_landmarks()
    script(t, 0.5)  # sigma = 2.5
    tensor, out = t(bgr, lms)
    pil = np.asarray(Image.fromarray(bgr[..., ::-1]).filter(ImageFilter.GaussianBlur(2.5))).astype(int)
    got = to_rgb_uint8(tensor).astype(int)
    assert np.abs(got - pil)[9:-9, 9:-9].max() <= 3  # PIL approximates the Gaussian with box blurs
    assert np.abs(got - cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).max() > 10
    np.testing.assert_allclose(out, lms, atol=1e-6)


def test_zero_sigma_blur_is_a_no_op():
    t = train(blur_p=1.0)
    bgr = random_bgr()
    script(t, 0.0)  # sigma = 0 (PIL: radius 0 leaves the image as is)
    tensor, _ = t(bgr, random_landmarks())
    np.testing.assert_array_equal(to_rgb_uint8(tensor), bgr[..., ::-1])


def test_grayscale_uses_luma_weights_on_all_channels():
    t = train(gray_p=1.0)
    bgr = random_bgr()
    script(t)
    got = to_rgb_uint8(t(bgr, random_landmarks())[0]).astype(int)
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()
    luma = np.asarray(Image.fromarray(bgr[..., ::-1]).convert("L")).astype(int)  # torchvision RandomGrayscale
    assert np.abs(got[..., 0] - luma).max() <= 1


def test_random_pipeline_keeps_landmarks_on_their_markers():
    """Translate + flip + rotate at random: each landmark stays on its coloured marker's centroid."""
    on = {"translate_p": 0.5, "translate_px": 8, "flip_p": 0.5, "rotate_p": 0.5}
    t = build_train_transform(S, [1, 0], **{**OFF, **on}, seed=11)
    bgr = np.zeros((S, S, 3), np.uint8)
    bgr[24:29, 20:25] = (0, 0, 255)  # red marker: landmark 0 (e.g. right eye), centre pixel (22, 26)
    bgr[24:29, 40:45] = (255, 0, 0)  # blue marker: landmark 1 (its mirror partner), centre pixel (42, 26)
    lms = np.array([[centre(22), centre(26)], [centre(42), centre(26)]])
    flips = 0
    for _ in range(40):
        tensor, out = t(bgr, lms)
        flipped = bool(t.compose.transforms[2].params)
        flips += flipped
        got = to_rgb_uint8(tensor)
        for k, channel in enumerate((0, 2)):
            ch = (2 - channel) if flipped else channel  # after a flip landmark k sits on its partner's marker
            ys, xs = np.nonzero(got[..., ch] == 255)
            np.testing.assert_allclose([(xs.mean() + 0.5) / S, (ys.mean() + 0.5) / S], out[k], atol=0.6 / S)
    assert 8 <= flips <= 32


# --- eval ---------------------------------------------------------------------------------------------------


def test_eval_transform_resizes_and_normalizes():
    t = build_eval_transform(S)
    bgr = np.empty((80, 96, 3), np.uint8)
    bgr[:] = (10, 100, 200)
    lms = np.array([[0.25, 0.75], [-0.1, 1.05]])  # never clipped in eval
    tensor, out = t(bgr, lms)
    assert tensor.shape == (3, S, S) and tensor.dtype == torch.float32
    expected = [(200 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (10 / 255 - 0.406) / 0.225]
    for c in range(3):
        np.testing.assert_allclose(tensor[c].numpy(), expected[c], atol=1e-5)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, lms.astype(np.float32))
    bgr = random_bgr(size=100)
    tensor, _ = t(bgr, lms)
    rgb = cv2.resize(bgr[..., ::-1].copy(), (S, S), interpolation=cv2.INTER_LINEAR)
    manual = (rgb / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(tensor.numpy().transpose(1, 2, 0), manual, atol=1e-5)


def test_eval_transform_is_deterministic_and_shape_matches_input_size():
    t = build_eval_transform(32)
    bgr = random_bgr()
    a, _ = t(bgr, random_landmarks())
    b, _ = t(bgr, random_landmarks())
    assert a.shape == (3, 32, 32)
    assert torch.equal(a, b)


# --- randomness ---------------------------------------------------------------------------------------------


def _run(t, n: int = 6):
    bgr, lms = random_bgr(), random_landmarks()
    return [t(bgr, lms) for _ in range(n)]


def _same(a, b) -> bool:
    return all(torch.equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_seed_makes_the_pipeline_reproducible():
    first = _run(build_train_transform(S, FLIP68, seed=123))
    assert _same(first, _run(build_train_transform(S, FLIP68, seed=123)))
    assert not _same(first, _run(build_train_transform(S, FLIP68, seed=124)))
    t = build_train_transform(S, FLIP68, seed=5)
    _run(t)
    t.set_seed(123)
    assert _same(first, _run(t))


def test_unseeded_pipeline_follows_the_global_random_seed():
    random.seed(42)
    first = _run(build_train_transform(S, FLIP68))
    random.seed(42)
    assert _same(first, _run(build_train_transform(S, FLIP68)))
    assert not _same(first, _run(build_train_transform(S, FLIP68)))


def test_steps_draw_independent_decisions():
    # Compose(seed=s) would seed every step with the same s: flip and grayscale each draw one number per
    # call, so grayscale (u < 0.2) would only ever hit flipped samples (u < 0.5).
    t = build_train_transform(S, FLIP68, seed=0)
    bgr, lms = random_bgr(), random_landmarks()
    applied = []
    for _ in range(300):
        t(bgr, lms)
        applied.append([bool(t.compose.transforms[i].params) for i in range(6)])
    applied = np.array(applied)
    np.testing.assert_allclose(applied.mean(0), [0.5, 0.5, 0.5, 0.5, 0.3, 0.2], atol=0.1)
    assert 0.05 < np.mean(applied[:, 5] & ~applied[:, 2]) < 0.16  # gray without flip: 0.2 * 0.5
    assert 0.15 < np.mean(applied[:, 0] & applied[:, 2]) < 0.35  # translate and flip: 0.25


def test_worker_streams_differ_and_are_reproducible(monkeypatch):
    worker = {"info": None}
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: worker["info"])
    built = build_train_transform(S, FLIP68, seed=9)  # in the main process; workers get copies
    copies = [copy.deepcopy(built) for _ in range(4)]
    main = _run(built)
    worker["info"] = SimpleNamespace(id=0, seed=1000)
    w0 = _run(copies[0])
    assert _same(w0, _run(copies[1]))  # same worker seed -> same stream
    worker["info"] = SimpleNamespace(id=1, seed=1001)
    w1 = _run(copies[2])
    assert not _same(main, w0) and not _same(w0, w1) and not _same(main, w1)
    # set_seed inside a worker pins that stream: no automatic reseed afterwards.
    copies[3].set_seed(9)
    assert _same(main, _run(copies[3]))


class _Repeat(Dataset):
    def __init__(self, transform):
        self.transform = transform
        self.image, self.landmarks = random_bgr(), random_landmarks()

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        return self.transform(self.image, self.landmarks)[1]


def test_dataloader_workers_do_not_replay_each_other():
    def collect() -> np.ndarray:
        torch.manual_seed(0)
        loader = DataLoader(_Repeat(build_train_transform(S, FLIP68, seed=1)), batch_size=1, num_workers=2)
        return np.stack([b[0].numpy() for b in loader])

    out = collect()
    # Items 0, 2, 4, 6 come from worker 0 and 1, 3, 5, 7 from worker 1: without per-worker streams they match.
    assert not np.array_equal(out[0::2], out[1::2])
    np.testing.assert_array_equal(out, collect())


# --- validation ---------------------------------------------------------------------------------------------


def test_flip_permutation_validation():
    np.testing.assert_array_equal(validate_flip_permutation(FLIP68), FLIP68)
    with pytest.raises(ValueError, match="not an involution"):
        validate_flip_permutation([1, 2, 0])
    with pytest.raises(ValueError, match="1-based"):
        validate_flip_permutation(_POINTS_FLIP_300W)
    with pytest.raises(ValueError, match=r"not a permutation.*repeated \[0\]"):
        validate_flip_permutation([0, 0, 1])
    with pytest.raises(ValueError, match="1-D"):
        validate_flip_permutation([[0, 1]])
    with pytest.raises(ValueError, match="integers"):
        validate_flip_permutation([0.5, 1.0])
    with pytest.raises(ValueError, match="not an involution"):
        build_train_transform(S, [1, 2, 0])


@pytest.mark.parametrize(
    ("image", "landmarks", "match"),
    [
        (random_bgr(), random_landmarks(67), "got 67 landmarks.*68"),
        (random_bgr(), np.zeros((68, 3)), r"shape \(L, 2\)"),
        (random_bgr(), np.full((68, 2), np.nan), "NaN"),
        (random_bgr().astype(np.float32), random_landmarks(), "uint8"),
        (random_bgr(size=32), random_landmarks(), "64x64 crop"),
        (random_bgr()[..., 0], random_landmarks(), r"\(H, W, 3\)"),
        ([[0]], random_landmarks(), "numpy array"),
    ],
)
def test_train_call_rejects_bad_inputs(image, landmarks, match):
    with pytest.raises(ValueError, match=match):
        build_train_transform(S, FLIP68)(image, landmarks)


def test_builders_reject_bad_settings():
    with pytest.raises(ValueError, match="translate_p must be a probability"):
        build_train_transform(S, FLIP68, translate_p=1.5)
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        build_eval_transform(0)
    with pytest.raises(ValueError, match="rotate_deg"):
        build_train_transform(S, FLIP68, rotate_deg=-1)
    with pytest.raises(ValueError, match="translate_px"):
        build_train_transform(S, FLIP68, translate_px=2.5)
    with pytest.raises(ValueError, match="uint8"):
        build_eval_transform(S)(random_bgr().astype(np.float64), random_landmarks())
