"""NME normalizations, FR/AUC vs a numpy re-implementation of official compute_fr_and_auc, box sizes.

Collecting per-image NMEs over a pass and over DDP ranks: ``test_evaluation.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import simpson as scipy_simpson

from pipnet_lit.datasets.meta import load_landmark_scheme
from pipnet_lit.metrics import fr_auc, nme
from pipnet_lit.metrics.functional import ced_curve, simpson

IO68 = ((36,), (45,))
IP68 = (tuple(range(36, 42)), tuple(range(42, 48)))
SCHEMES = {68: "ibug68", 98: "wflw98", 29: "cofw29"}

# --------------------------------------------------------------------------------------------------- NME


def face(num_lms: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, num_lms, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 100


def shifted(target: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    return target + torch.tensor([dx, dy], dtype=target.dtype)


@pytest.mark.parametrize(("num_lms", "a", "b"), [(68, 36, 45), (98, 60, 72), (29, 8, 9)])
def test_inter_ocular_from_the_scheme_yaml(num_lms, a, b):
    indices = load_landmark_scheme(SCHEMES[num_lms]).norm_indices("inter_ocular")
    assert indices == ((a,), (b,))  # the official corners, as each scheme YAML states them
    gt = face(num_lms)
    gt[0, a] = torch.tensor([10.0, 20.0])
    gt[0, b] = torch.tensor([13.0, 24.0])  # distance 5
    pred = shifted(gt, 0.6, 0.8)  # every landmark off by 1.0
    out = nme(pred, gt, "inter_ocular", norm_indices=indices)
    assert out.shape == (1,) and out.dtype == torch.float64
    assert out.item() == pytest.approx(1.0 / 5.0, rel=1e-12)
    with pytest.raises(ValueError, match="needs norm_indices"):  # no table keyed by landmark count
        nme(pred, gt)


def test_inter_pupil_300w_uses_eye_centres():
    gt = face(68)
    gt[0, 36:42] = torch.tensor(
        [[0.0, 0.0], [2, 0], [4, 0], [6, 0], [4, 2], [2, 2]], dtype=torch.float64
    )  # mean (3, 2/3)
    gt[0, 42:48] = torch.tensor(
        [[20.0, 0], [22, 0], [24, 0], [26, 0], [24, 2], [22, 2]], dtype=torch.float64
    )  # (23, 2/3)
    pred = shifted(gt, 2.0, 0.0)
    assert nme(pred, gt, "inter_pupil", norm_indices=IP68).item() == pytest.approx(2.0 / 20.0, rel=1e-12)


@pytest.mark.parametrize(("num_lms", "a", "b"), [(98, 96, 97), (29, 16, 17)])
def test_inter_pupil_points_from_the_scheme_yaml(num_lms, a, b):
    indices = load_landmark_scheme(SCHEMES[num_lms]).norm_indices("inter_pupil")
    assert indices == ((a,), (b,))
    gt = face(num_lms, seed=1)
    gt[0, a] = torch.tensor([5.0, 5.0])
    gt[0, b] = torch.tensor([5.0, 13.0])  # distance 8
    pred = shifted(gt, 0.0, -2.0)
    assert nme(pred, gt, "inter_pupil", norm_indices=indices).item() == pytest.approx(2.0 / 8.0, rel=1e-12)


def test_bbox_diag_none_and_tensor_norms():
    gt = torch.tensor(
        [[[0.0, 0.0], [4.0, 1.0], [2.0, 9.0]], [[1.0, 1.0], [2.0, 2.0], [1.5, 1.2]]], dtype=torch.float64
    )
    pred = gt.clone()
    pred[0, 0] += torch.tensor([3.0, 4.0])  # errors (5, 0, 0): mean 5/3
    pred[1, :] += torch.tensor([0.3, 0.4])  # errors 0.5 each: mean 0.5
    box = nme(pred, gt, "bbox")  # sqrt(4 * 9) = 6; sqrt(1 * 1) = 1
    torch.testing.assert_close(box, torch.tensor([5 / 3 / 6, 0.5 / 1.0], dtype=torch.float64))
    diag = nme(pred, gt, "diag")  # sqrt(16 + 81); sqrt(2)
    torch.testing.assert_close(diag, torch.tensor([5 / 3 / 97**0.5, 0.5 / 2**0.5], dtype=torch.float64))
    torch.testing.assert_close(nme(pred, gt, "none"), torch.tensor([5 / 3, 0.5], dtype=torch.float64))
    torch.testing.assert_close(nme(pred, gt, 1), torch.tensor([5 / 3, 0.5], dtype=torch.float64))
    torch.testing.assert_close(
        nme(pred, gt, torch.tensor([2.0, 0.25])), torch.tensor([5 / 6, 2.0], dtype=torch.float64)
    )


def test_norm_indices_override_and_groups():
    gt = torch.tensor([[[0.0, 0.0], [6.0, 8.0], [0.0, 2.0], [6.0, 10.0], [3.0, 3.0]]], dtype=torch.float64)
    pred = shifted(gt, 1.0, 0.0)
    assert nme(pred, gt, "inter_ocular", norm_indices=(0, 1)).item() == pytest.approx(0.1)
    # groups: mean of (0, 2) = (0, 1); mean of (1, 3) = (6, 9) -> distance 10
    assert nme(pred, gt, "inter_pupil", norm_indices=([0, 2], [1, 3])).item() == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("pred", "target", "norm", "kwargs", "match"),
    [
        (
            torch.zeros(2, 5, 2),
            torch.zeros(2, 5, 2),
            "inter_ocular",
            {},
            "needs norm_indices",
        ),
        (torch.zeros(2, 5, 2), torch.zeros(2, 4, 2), "none", {}, r"both have shape \(B, L, 2\)"),
        (
            torch.zeros(2, 68, 2),
            torch.zeros(2, 68, 2),
            "inter_ocular",
            {"norm_indices": IO68},
            r"zero.*samples \[0, 1\]",
        ),
        (torch.zeros(1, 5, 2), torch.rand(1, 5, 2), "inter_ocular", {"norm_indices": (0, 7)}, "out of range"),
        (torch.zeros(1, 5, 2), torch.rand(1, 5, 2), "eyes", {}, "unknown norm 'eyes'"),
        (torch.zeros(2, 5, 2), torch.rand(2, 5, 2), torch.ones(3), {}, r"shape \(2,\)"),
        (torch.zeros(2, 5, 2), torch.rand(2, 5, 2), torch.tensor([1.0, 0.0]), {}, r"samples \[1\]"),
    ],
)
def test_nme_errors(pred, target, norm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        nme(pred, target, norm, **kwargs)


# --------------------------------------------------------------------------------------------------- FR / AUC


def old_simps_avg(y: np.ndarray, x: np.ndarray) -> float:
    """scipy's pre-1.11 simps(y, x) (even='avg'): scipy.integrate.simpson on odd parts plus trapezoids."""
    if len(y) % 2 == 1:
        return float(scipy_simpson(y, x=x))
    first = scipy_simpson(y[:-1], x=x[:-1]) + 0.5 * (x[-1] - x[-2]) * (y[-1] + y[-2])
    last = 0.5 * (x[1] - x[0]) * (y[1] + y[0]) + scipy_simpson(y[1:], x=x[1:])
    return float((first + last) / 2)


def reference_fr_and_auc(nmes: np.ndarray, thres: float = 0.1, step: float = 0.0001):
    """numpy version of the official compute_fr_and_auc."""
    xs = np.arange(0, thres + step, step)
    ys = np.array([np.count_nonzero(nmes <= x) for x in xs]) / float(len(nmes))
    return 1.0 - ys[-1], old_simps_avg(ys, xs) / thres


@pytest.mark.parametrize("threshold", [0.1, 0.08, 0.05])
@pytest.mark.parametrize("seed", [0, 1])
def test_fr_auc_matches_official(threshold, seed):
    rng = np.random.default_rng(seed)
    nmes = np.abs(rng.normal(0.04, 0.03, size=257))
    nmes[:3] = [0.0, threshold, threshold + 1e-4]  # on the curve's grid points
    fr, auc = fr_auc(torch.from_numpy(nmes), threshold)
    ref_fr, ref_auc = reference_fr_and_auc(nmes, threshold)
    assert isinstance(fr, float) and isinstance(auc, float)
    assert fr == pytest.approx(ref_fr, abs=1e-12)
    assert auc == pytest.approx(ref_auc, abs=1e-6)
    assert 0 < fr < 1 and 0 < auc < 1
    fr32, auc32 = fr_auc(nmes.tolist(), threshold)  # lists work too
    assert (fr32, auc32) == pytest.approx((fr, auc), abs=1e-12)


def test_point_counts_and_quirk_of_last_x():
    assert len(ced_curve([0.0], 0.1)[0]) == 1001  # odd -> plain Simpson
    assert len(ced_curve([0.0], 0.08)[0]) == 801
    xs, _ = ced_curve([0.0], 0.05)
    assert len(xs) == 502  # even -> old 'avg' rule; the last x is 0.0501 > threshold (official quirk)
    np.testing.assert_array_equal(xs.numpy(), np.arange(0, 0.05 + 1e-4, 1e-4))
    fr, auc = fr_auc([0.0, 0.0], 0.05)
    assert fr == 0.0 and auc == pytest.approx(float(xs[-1]) / 0.05, abs=1e-12)
    assert fr_auc([0.5, 1.0], 0.1) == (1.0, 0.0)
    assert fr_auc([0.05, 0.5], 0.1)[0] == 0.5


@pytest.mark.parametrize("n", [3, 7, 101, 1001])
def test_simpson_odd_equals_scipy(n):
    rng = np.random.default_rng(n)
    x = np.cumsum(rng.random(n))
    y = rng.random(n)
    assert float(simpson(torch.from_numpy(y), torch.from_numpy(x))) == pytest.approx(
        scipy_simpson(y, x=x), abs=1e-12
    )


@pytest.mark.parametrize("n", [2, 4, 8, 502])
def test_simpson_even_equals_old_avg_formula(n):
    rng = np.random.default_rng(n)
    x = np.cumsum(rng.random(n))
    y = rng.random(n)
    if n == 2:  # Simpson parts are empty: the average of two trapezoids on the single interval
        expected = 0.5 * (x[1] - x[0]) * (y[0] + y[1])
    else:
        expected = old_simps_avg(y, x)
    assert float(simpson(torch.from_numpy(y), torch.from_numpy(x))) == pytest.approx(expected, abs=1e-12)
    if n > 2:  # new scipy uses a different even-N rule: make sure we really follow the old one
        assert float(simpson(torch.from_numpy(y), torch.from_numpy(x))) != pytest.approx(
            scipy_simpson(y, x=x), abs=1e-9
        )


def test_fr_auc_errors():
    with pytest.raises(ValueError, match="no NMEs"):
        fr_auc([])
    with pytest.raises(ValueError, match="positive"):
        fr_auc([0.1], threshold=0.0)


def test_box_sizes_hand_computed():
    from pipnet_lit.metrics.functional import box_size

    boxes = torch.tensor([[5.0, 7.0, 3.0, 4.0], [0.0, 0.0, 10.0, 2.5]], dtype=torch.float64)
    torch.testing.assert_close(
        box_size(boxes, "box_diag"), torch.tensor([5.0, (100 + 6.25) ** 0.5], dtype=torch.float64)
    )
    torch.testing.assert_close(
        box_size(boxes, "box_sqrt_area"), torch.tensor([12**0.5, 5.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        box_size(boxes, "box_long_side"), torch.tensor([4.0, 10.0], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="unknown box norm 'box_area'"):
        box_size(boxes, "box_area")
