"""encode_targets vs hand-computed cells/offsets and a loop re-implementation of official gen_target_pip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipnet_lit.pip import PIPTargets, build_neighbors, encode_targets

LINE5 = (
    np.array([[0, 8], [1, 8], [3, 8], [7, 8], [9, 8]], dtype=np.float64) / 16.0
)  # neighbours in test_neighbors


def reference_gen_target(target: np.ndarray, indices: np.ndarray, h: int, w: int):
    """Loop version of the official gen_target_pip for one sample (float64 maps, float32 at the end)."""
    num_lms, num_nb = indices.shape
    score = np.zeros((num_lms, h, w))
    ox = np.zeros((num_lms, h, w))
    oy = np.zeros((num_lms, h, w))
    nbx = np.zeros((num_lms * num_nb, h, w))
    nby = np.zeros((num_lms * num_nb, h, w))
    for i in range(num_lms):
        mu_x = min(max(0, int(math.floor(target[i][0] * w))), w - 1)
        mu_y = min(max(0, int(math.floor(target[i][1] * h))), h - 1)
        score[i, mu_y, mu_x] = 1
        ox[i, mu_y, mu_x] = target[i][0] * w - mu_x
        oy[i, mu_y, mu_x] = target[i][1] * h - mu_y
        for j in range(num_nb):
            k = indices[i][j]
            nbx[num_nb * i + j, mu_y, mu_x] = target[k][0] * w - mu_x
            nby[num_nb * i + j, mu_y, mu_x] = target[k][1] * h - mu_y
    return [torch.from_numpy(a).float() for a in (score, ox, oy, nbx, nby)]


def test_hand_computed_cells_and_offsets():
    nb = build_neighbors(LINE5, 2)  # indices [[1,2],[0,2],[1,0],[4,2],[3,2]]
    # grid H=4, W=4; points: inside, x exactly 1.0, negative, beyond the right/bottom, exactly on a cell edge
    pts = torch.tensor(
        [[[0.30, 0.60], [1.0, 0.0], [-0.1, 0.5], [1.3, 1.0], [0.25, 0.75]]], dtype=torch.float64
    )
    t = encode_targets(pts, nb, (4, 4))
    assert isinstance(t, PIPTargets)
    # cells: (1,2)->9; x=1.0 -> floor(4)=4 clamped 3, y 0 -> 3; x=-0.1 -> -1 clamped 0, y 2 -> 8;
    # (5.2 -> 3, 4 -> 3) -> 15; (1, 3) -> 13
    assert t.cell.tolist() == [[9, 3, 8, 15, 13]]
    exp_cell_xy = [(1, 2), (3, 0), (0, 2), (3, 3), (1, 3)]
    exp_off = [(0.2, 0.4), (1.0, 0.0), (-0.4, 0.0), (2.2, 1.0), (0.0, 0.0)]
    for i, ((cx, cy), (dx, dy)) in enumerate(zip(exp_cell_xy, exp_off, strict=True)):
        assert t.score[0, i, cy, cx] == 1 and t.score[0, i].sum() == 1
        assert t.offset_x[0, i, cy, cx].item() == pytest.approx(dx, abs=1e-6)
        assert t.offset_y[0, i, cy, cx].item() == pytest.approx(dy, abs=1e-6)
        assert t.offset_x[0, i].abs().sum().item() == pytest.approx(abs(dx), abs=1e-6)  # zero elsewhere
    # neighbour channels of landmark 2 (neighbours 1 and 0) at its cell (x 0, y 2):
    # nb_x = x_k*4 - 0 -> (1.0*4, 0.30*4) ; nb_y = y_k*4 - 2 -> (0 - 2, 0.6*4 - 2)
    assert t.nb_x[0, 4, 2, 0].item() == pytest.approx(4.0)
    assert t.nb_x[0, 5, 2, 0].item() == pytest.approx(1.2)
    assert t.nb_y[0, 4, 2, 0].item() == pytest.approx(-2.0)
    assert t.nb_y[0, 5, 2, 0].item() == pytest.approx(0.4)
    # landmark 3 (neighbours 4, 2) at cell (3, 3): x_4*4 - 3 = -2, x_2*4 - 3 = -3.4
    assert t.nb_x[0, 6, 3, 3].item() == pytest.approx(-2.0)
    assert t.nb_x[0, 7, 3, 3].item() == pytest.approx(-3.4)
    assert int((t.nb_x != 0).sum()) <= 10


def test_non_square_grid_uses_w_for_x_and_h_for_y():
    nb = build_neighbors(LINE5, 2)
    pts = torch.tensor([[[0.30, 0.60]] * 5], dtype=torch.float32)
    t = encode_targets(pts, nb, (4, 8))  # H=4, W=8: x*8=2.4 -> col 2; y*4=2.4 -> row 2
    assert t.score.shape == (1, 5, 4, 8)
    assert t.cell[0, 0].item() == 2 * 8 + 2
    assert t.offset_x[0, 0, 2, 2].item() == pytest.approx(0.4, abs=1e-6)
    assert t.offset_y[0, 0, 2, 2].item() == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize("grid", [(8, 8), (4, 4), (2, 2), (7, 7), (3, 5)])
def test_random_batch_equals_reference(grid):
    gen = torch.Generator().manual_seed(sum(grid))
    mf = torch.rand(68, 2, generator=gen)
    nb = build_neighbors(mf, 10)
    lms = torch.rand(3, 68, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2  # some points outside the crop
    lms[0, 0] = torch.tensor([1.0, 1.0], dtype=torch.float64)
    lms[1, 3] = torch.tensor([0.0, -0.0], dtype=torch.float64)
    t = encode_targets(lms, nb, grid)
    h, w = grid
    for b in range(lms.shape[0]):
        ref = reference_gen_target(lms[b].numpy(), nb.indices.numpy(), h, w)
        for name, r in zip(("score", "offset_x", "offset_y", "nb_x", "nb_y"), ref, strict=True):
            got = getattr(t, name)[b]
            assert got.dtype == torch.float32
            assert torch.equal(got, r), (name, b)
        assert t.cell[b].tolist() == ref[0].view(68, -1).argmax(1).tolist()


def test_float32_input_and_shapes():
    nb = build_neighbors(torch.rand(19, 2, generator=torch.Generator().manual_seed(1)), 4)
    lms = torch.rand(2, 19, 2)
    t = encode_targets(lms, nb, (8, 8))
    assert t.score.shape == (2, 19, 8, 8) and t.nb_x.shape == (2, 76, 8, 8) and t.cell.shape == (2, 19)
    assert t.cell.dtype == torch.long and t.score.device == lms.device
    ref = reference_gen_target(lms[1].double().numpy(), nb.indices.numpy(), 8, 8)
    assert torch.equal(t.nb_y[1], ref[4])


@pytest.mark.parametrize(
    ("lms", "grid", "match"),
    [
        (torch.rand(2, 4, 2), (8, 8), "L=4 points"),
        (torch.rand(5, 2), (8, 8), r"\(B, L, 2\)"),
        (torch.rand(1, 5, 2), (8,), r"grid must be \(H, W\)"),
        (torch.rand(1, 5, 2), (0, 8), "positive"),
        (torch.tensor([[[0.1, 0.2]] * 4 + [[float("nan"), 0.5]]]), (8, 8), r"NaN/inf.*\[\[0, 4\]\]"),
    ],
)
def test_encode_errors(lms, grid, match):
    nb = build_neighbors(LINE5, 2)
    with pytest.raises(ValueError, match=match):
        encode_targets(lms, nb, grid)
