"""Face-box geometry: CropBox, the official margin arithmetic, expand / clamp / clip, (de)normalizing."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from pipnet_lit.datasets.geometry import (
    CropBox,
    clamp_box,
    clip_points,
    crop_and_resize,
    denormalize_points,
    expand_box,
    margin,
    normalize_points,
)


def test_cropbox_slices_size_and_xywh() -> None:
    box = CropBox(1.7, 2.2, 10.9, 20.5)
    # int() truncation of every edge, rows first.
    assert box.slices() == (slice(2, 20), slice(1, 10))
    # The float frame is kept as computed (10.9 - 1.7 is 9.200000000000001 in binary floats).
    assert box.width == 9.200000000000001 and box.height == 18.3
    assert box.xywh() == (1.7, 2.2, 9.200000000000001, 18.3)
    assert CropBox(0, 3, 99, 49).xywh() == (0, 3, 99, 46)
    assert CropBox(0, 3, 99, 49).slices() == (slice(3, 49), slice(0, 99))
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.x0 = 0.0  # type: ignore[misc]


def test_cropbox_check() -> None:
    box = CropBox(1.7, 2.2, 10.9, 20.5)
    assert box.check() is box
    assert CropBox(1.2, 0.0, 2.0, 1.0).check().slices() == (slice(0, 1), slice(1, 2))  # one pixel
    empty = [
        CropBox(1.2, 0.0, 1.9, 5.0),  # positive float width, but int() gives 1:1
        CropBox(5.0, 0.0, 5.0, 10.0),  # zero width
        CropBox(10.0, 0.0, 5.0, 10.0),  # inverted
        CropBox(0.0, 7.0, 10.0, 7.5),  # empty rows
    ]
    for bad in empty:
        with pytest.raises(ValueError, match="empty face box"):
            bad.check()
    with pytest.raises(
        ValueError, match=r"^img\.jpg: empty face box x0=1\.2, y0=0\.0, x1=1\.9, y1=5\.0 after"
    ):
        empty[0].check("img.jpg")


def test_margin_uses_the_official_float_expression() -> None:
    # size * (scale - 1) / 2 in floats: not size * 0.1, which would be exactly 1.0.
    assert margin(10, 1.2) == 0.9999999999999998
    assert int(margin(10, 1.2)) == 0 and 10 * 0.1 == 1.0
    assert margin(20, 1.3) == 3.0000000000000004
    assert margin(7.5, 1.0) == 0.0
    assert margin(12.5, 1.2) == 12.5 * (1.2 - 1) / 2 == 1.2499999999999998


def test_expand_box() -> None:
    assert expand_box(10, 20, 30, 40, 1, 2, 3, 4) == (9, 18, 33, 44)
    # A negative top margin moves the top edge down (the WFLW self-training crop).
    assert expand_box(0.0, 10.0, 10.0, 20.0, 0.0, -2.0, 0.0, 0.0) == (0.0, 12.0, 10.0, 20.0)
    d = margin(10, 1.2)
    assert expand_box(5.0, 5.0, 15.0, 15.0, d, d, d, d) == (5.0 - d, 5.0 - d, 15.0 + d, 15.0 + d)


def test_clamp_box() -> None:
    # max(x0, 0) / min(x1, W - 1): the far edge stops at the last pixel index.
    clamped = clamp_box(-2.5, 3, 120, 50.5, 100, 50)
    assert clamped == CropBox(0, 3, 99, 49)
    assert [type(v) for v in (clamped.x0, clamped.y0, clamped.x1, clamped.y1)] == [int, int, int, int]
    inside = clamp_box(1.5, 2.5, 10.5, 20.5, 100, 100)
    assert inside == CropBox(1.5, 2.5, 10.5, 20.5)  # unchanged floats inside the image
    assert clamp_box(0.0, 0.0, 99.0, 100.0, 100, 100) == CropBox(0.0, 0.0, 99.0, 99)


def test_clip_points() -> None:
    pts = np.array([[-1.0, 5.0], [120.0, -3.0], [50.5, 60.0], [100.0, 50.0]])
    clipped = clip_points(pts, 100, 50)
    # [0, W] x [0, H], not W - 1: a point on the far border stays.
    np.testing.assert_array_equal(clipped, [[0.0, 5.0], [100.0, 0.0], [50.5, 50.0], [100.0, 50.0]])
    assert clipped.dtype == np.float64 and clipped is not pts
    np.testing.assert_array_equal(pts[0], [-1.0, 5.0])  # input untouched
    assert clip_points(np.array([[3, 200]]), 10, 10).dtype == np.float64


def test_crop_and_resize_takes_the_int_slices() -> None:
    image = (np.arange(24 * 20 * 3) % 251).astype(np.uint8).reshape(24, 20, 3)
    box = CropBox(1.7, 2.2, 10.9, 20.5)
    crop = crop_and_resize(image, box, 8)
    expected = cv2.resize(image[2:20, 1:10], (8, 8), interpolation=cv2.INTER_LINEAR)
    assert crop.shape == (8, 8, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, expected)
    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)):
        with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 BGR"):
            crop_and_resize(bad, CropBox(0, 0, 4, 4), 4)
    with pytest.raises(ValueError, match="empty face box"):
        crop_and_resize(image, CropBox(1.2, 0.0, 1.9, 5.0), 4)


def test_normalize_points_hand_computed() -> None:
    box = CropBox(1.5, 2.0, 11.5, 22.0)
    pts = np.array([[1.5, 2.0], [11.5, 22.0], [6.5, 12.0], [-0.5, 27.0]])
    out = normalize_points(pts, box)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [-0.2, 1.25]])  # not clipped
    # The float box, not the integer crop: (p - x0) / (x1 - x0) with x0 = 1.7.
    np.testing.assert_array_equal(
        normalize_points(np.array([[3.0, 4.0]]), CropBox(1.7, 2.2, 10.9, 20.5)),
        [[(3.0 - 1.7) / (10.9 - 1.7), (4.0 - 2.2) / (20.5 - 2.2)]],
    )


def test_denormalize_round_trip_numpy() -> None:
    rng = np.random.default_rng(0)
    box = CropBox(1.7, 2.2, 10.9, 20.5)
    pts = rng.uniform(-5, 30, (7, 2))
    norm = normalize_points(pts, box)
    np.testing.assert_allclose(denormalize_points(norm, box), pts, rtol=0, atol=1e-12)
    np.testing.assert_allclose(denormalize_points(norm, np.array(box.xywh())), pts, rtol=0, atol=1e-12)
    # Batched frames (B, 4) against (B, L, 2) landmarks: each sample uses its own frame.
    boxes = [box, CropBox(0, 0, 99, 49), CropBox(-3.0, 4.5, 20.0, 9.5)]
    batch = rng.uniform(-0.2, 1.2, (3, 7, 2))
    frames = np.array([b.xywh() for b in boxes], dtype=np.float64)
    out = denormalize_points(batch, frames)
    assert out.shape == (3, 7, 2)
    for i, b in enumerate(boxes):
        np.testing.assert_array_equal(out[i], denormalize_points(batch[i], b))
        np.testing.assert_allclose(normalize_points(out[i], b), batch[i], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out[1], batch[1] * [99.0, 49.0])


def test_denormalize_torch_batched() -> None:
    rng = np.random.default_rng(1)
    frames = np.array([[1.7, 2.2, 9.2, 18.3], [0.0, 0.0, 99.0, 49.0]])
    batch = rng.uniform(0, 1, (2, 5, 2))
    out = denormalize_points(torch.from_numpy(batch), torch.from_numpy(frames))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5, 2) and out.dtype == torch.float64
    np.testing.assert_array_equal(out.numpy(), denormalize_points(batch, frames))
    # float32 predictions with float32 frames stay float32 tensors.
    out32 = denormalize_points(torch.from_numpy(batch).float(), torch.from_numpy(frames).float())
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), out.numpy(), rtol=1e-6, atol=1e-5)
    # Extra leading dimensions broadcast too: (B, T, 4) frames with (B, T, L, 2) landmarks.
    deep = torch.from_numpy(rng.uniform(0, 1, (2, 3, 5, 2)))
    deep_frames = torch.from_numpy(np.broadcast_to(frames[:, None], (2, 3, 4)).copy())
    np.testing.assert_array_equal(
        denormalize_points(deep, deep_frames)[:, 1].numpy(), denormalize_points(deep[:, 1], deep_frames[:, 1])
    )
