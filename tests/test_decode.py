"""decode vs hand-built outputs, a per-landmark loop version of official forward_pip + merge, round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipnet_lit.pip import DecodeResult, PIPOutputs, build_neighbors, decode, decode_details, encode_targets

LINE5 = np.array([[0, 8], [1, 8], [3, 8], [7, 8], [9, 8]], dtype=np.float64) / 16.0
# neighbours: [[1,2],[0,2],[1,0],[4,2],[3,2]]; votes received (i, j):
LINE5_VOTES = {
    0: [(1, 0), (2, 1)],
    1: [(0, 0), (2, 0)],
    2: [(0, 1), (1, 1), (3, 1), (4, 1)],
    3: [(4, 0)],
    4: [(3, 0)],
}


def reference_forward_and_merge(outputs, indices: np.ndarray, input_size: int, net_stride: int):
    """Official forward_pip + lib/test.py merge, one sample and one landmark at a time (B loop, L loop)."""
    score, ox, oy, nbx, nby = (o.float() for o in outputs[:5])
    b_size, num_lms, h, w = score.shape
    num_nb = indices.shape[1]
    rev = {t: [] for t in range(num_lms)}
    for i in range(num_lms):
        for j in range(num_nb):
            rev[int(indices[i][j])].append((i, j))
    max_len = max(len(v) for v in rev.values())
    own_all, merged_all = [], []
    for b in range(b_size):
        own = torch.zeros(num_lms, 2)
        nb_est = torch.zeros(num_lms, num_nb, 2)
        for i in range(num_lms):
            cell = int(torch.argmax(score[b, i].reshape(-1)))
            cx, cy = cell % w, cell // w
            own[i, 0] = (cx + ox[b, i].reshape(-1)[cell]) / (1.0 * input_size / net_stride)
            own[i, 1] = (cy + oy[b, i].reshape(-1)[cell]) / (1.0 * input_size / net_stride)
            for j in range(num_nb):
                nb_est[i, j, 0] = (cx + nbx[b, i * num_nb + j].reshape(-1)[cell]) / (
                    1.0 * input_size / net_stride
                )
                nb_est[i, j, 1] = (cy + nby[b, i * num_nb + j].reshape(-1)[cell]) / (
                    1.0 * input_size / net_stride
                )
        merged = torch.zeros(num_lms, 2)
        for t in range(num_lms):
            votes = (rev[t] + rev[t] * 10)[:max_len]
            for c in range(2):
                vals = torch.stack([own[t, c]] + [nb_est[i, j, c] for i, j in votes])
                merged[t, c] = vals.mean()
        own_all.append(own)
        merged_all.append(merged)
    return torch.stack(own_all), torch.stack(merged_all)


def random_outputs(b, num_lms, num_nb, h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    return PIPOutputs(
        torch.randn(b, num_lms, h, w, generator=gen),
        torch.rand(b, num_lms, h, w, generator=gen),
        torch.rand(b, num_lms, h, w, generator=gen),
        torch.randn(b, num_lms * num_nb, h, w, generator=gen) * 3,
        torch.randn(b, num_lms * num_nb, h, w, generator=gen) * 3,
    )


@pytest.mark.parametrize(
    ("num_lms", "num_nb", "input_size", "stride", "seed"), [(68, 10, 256, 32, 68), (29, 5, 128, 32, 100)]
)
@pytest.mark.filterwarnings("error::UserWarning")  # mean faces where the official merge is defined
def test_decode_matches_official_loop(num_lms, num_nb, input_size, stride, seed):
    gen = torch.Generator().manual_seed(seed)
    mf = torch.rand(num_lms, 2, generator=gen)
    nb = build_neighbors(mf, num_nb)
    grid = input_size // stride
    outputs = random_outputs(2, num_lms, num_nb, grid, grid, seed=num_lms)
    ref_own, ref_merged = reference_forward_and_merge(outputs, nb.indices.numpy(), input_size, stride)
    own = decode(outputs, nb, merge=False)
    merged = decode(outputs, nb)
    assert own.shape == (2, num_lms, 2) and merged.shape == (2, num_lms, 2)
    torch.testing.assert_close(own, ref_own, rtol=0, atol=1e-6)
    torch.testing.assert_close(merged, ref_merged, rtol=0, atol=1e-6)
    assert not torch.allclose(own, merged, atol=1e-3)  # the merge really changes the estimate


def test_hand_built_outputs_and_merge():
    nb = build_neighbors(LINE5, 2)
    h = w = 4
    score = torch.zeros(1, 5, h, w)
    ox = torch.zeros(1, 5, h, w)
    oy = torch.zeros(1, 5, h, w)
    nbx = torch.zeros(1, 10, h, w)
    nby = torch.zeros(1, 10, h, w)
    cells = [(1, 2), (0, 0), (3, 1), (2, 3), (3, 3)]  # (col, row) of each landmark's peak
    for i, (cx, cy) in enumerate(cells):
        score[0, i, cy, cx] = 5.0
        score[0, i, (cy + 1) % h, (cx + 2) % w] = 4.0  # a lower peak elsewhere
        ox[0, i, cy, cx] = 0.25 * i
        oy[0, i, cy, cx] = 0.5
        ox[0, i, (cy + 1) % h, (cx + 2) % w] = 99.0  # must be ignored
        for j in range(2):
            nbx[0, 2 * i + j, cy, cx] = 0.1 * (i + 1) + j
            nby[0, 2 * i + j, cy, cx] = -0.5 * j
    det = decode_details(score, ox, oy, nbx, nby, nb)
    assert isinstance(det, DecodeResult)
    assert det.cell.tolist() == [[cy * w + cx for cx, cy in cells]]
    assert det.max_score.tolist() == [[5.0] * 5]
    own = [((cx + 0.25 * i) / w, (cy + 0.5) / h) for i, (cx, cy) in enumerate(cells)]
    torch.testing.assert_close(det.own[0], torch.tensor(own), rtol=0, atol=1e-7)
    votes = {
        (i, j): ((cx + 0.1 * (i + 1) + j) / w, (cy - 0.5 * j) / h)
        for i, (cx, cy) in enumerate(cells)
        for j in (0, 1)
    }
    for (i, j), v in votes.items():
        torch.testing.assert_close(det.nb[0, i, j], torch.tensor(v), rtol=0, atol=1e-7)
    # merged = mean(own, received votes padded to max_len = 4 by repetition)
    for t, recv in LINE5_VOTES.items():
        padded = (recv * 4)[:4]
        vals = np.array([own[t]] + [votes[v] for v in padded])
        torch.testing.assert_close(
            det.merged[0, t], torch.tensor(vals.mean(0), dtype=torch.float32), rtol=0, atol=1e-6
        )
        torch.testing.assert_close(
            det.received[0, t], torch.tensor(vals[1:], dtype=torch.float32), rtol=0, atol=1e-6
        )


def test_argmax_ties_take_first_cell_and_non_square_grid():
    nb = build_neighbors(LINE5, 2)
    outputs = random_outputs(1, 5, 2, 4, 8, seed=3)
    score = torch.zeros(1, 5, 4, 8)
    score[0, :, 1, 6] = 2.0
    score[0, :, 3, 1] = 2.0  # same maximum later in flat order
    det = decode_details(score, *outputs[1:5], nb)
    assert det.cell.tolist() == [[1 * 8 + 6] * 5]
    exp_x = (6 + outputs.offset_x[0, :, 1, 6]) / 8
    exp_y = (1 + outputs.offset_y[0, :, 1, 6]) / 4  # y divides by H
    torch.testing.assert_close(det.own[0, :, 0], exp_x)
    torch.testing.assert_close(det.own[0, :, 1], exp_y)


@pytest.mark.parametrize("grid", [8, 4, 2])
def test_round_trip_recovers_landmarks(grid):
    gen = torch.Generator().manual_seed(grid)
    nb = build_neighbors(torch.rand(68, 2, generator=gen), 10)
    lms = torch.rand(2, 68, 2, generator=gen) * 1.2 - 0.1  # includes points outside the crop
    t = encode_targets(lms, nb, (grid, grid))
    own = decode(t.score, t.offset_x, t.offset_y, t.nb_x, t.nb_y, nb, merge=False)
    merged = decode(t.score, t.offset_x, t.offset_y, t.nb_x, t.nb_y, nb)
    assert torch.equal(own, lms)  # exact for power-of-two grids
    torch.testing.assert_close(merged, lms, rtol=0, atol=1e-6)


def test_landmark_without_votes_keeps_own_estimate():
    mf = np.array([[0, 8], [1, 8], [3, 8], [7, 8], [15, 8]], dtype=np.float64) / 16.0
    with pytest.warns(UserWarning):
        nb = build_neighbors(mf, 2)
    outputs = random_outputs(2, 5, 2, 4, 4, seed=7)
    det = decode_details(outputs, nb)
    torch.testing.assert_close(det.merged[:, 4], det.own[:, 4], rtol=0, atol=1e-6)
    assert not torch.allclose(det.merged[:, 3], det.own[:, 3])


def test_decode_errors():
    nb = build_neighbors(LINE5, 2)
    o = random_outputs(1, 5, 2, 4, 4, seed=0)
    with pytest.raises(ValueError, match=r"nb_x has shape \(1, 10, 4, 4\), expected \(1, 15, 4, 4\)"):
        decode(o, build_neighbors(LINE5, 3))
    with pytest.raises(ValueError, match="offset_y has shape"):
        decode(o.score, o.offset_x, o.offset_y[:, :, :2], o.nb_x, o.nb_y, nb)
    with pytest.raises(ValueError, match=r"score must have shape \(B, L, H, W\)"):
        decode(o.score[0], o.offset_x, o.offset_y, o.nb_x, o.nb_y, nb)
    with pytest.raises(ValueError, match="L=4 landmarks"):
        decode(random_outputs(1, 4, 2, 4, 4, seed=0), nb)


def test_record_form_equals_five_tensor_form():
    nb = build_neighbors(LINE5, 2)
    o = random_outputs(2, 5, 2, 4, 4, seed=11)
    gen = torch.Generator().manual_seed(1)
    with_coarse = o._replace(score_coarse=(torch.randn(2, 5, 2, 2, generator=gen),))  # ignored by decode
    five = (o.score, o.offset_x, o.offset_y, o.nb_x, o.nb_y)
    for merge in (True, False):
        ref = decode(*five, nb, merge=merge)
        assert torch.equal(decode(o, nb, merge=merge), ref)
        assert torch.equal(decode(with_coarse, nb, merge=merge), ref)
        assert torch.equal(decode(*five, nb, merge), ref)  # merge positionally, as the old signature allowed
        assert torch.equal(decode(tuple(with_coarse), nb, merge=merge), ref)  # a traced network's plain tuple
    assert not torch.equal(decode(o, nb, merge=True), decode(o, nb, merge=False))
    a, b = decode_details(o, nb), decode_details(*five, nb)
    for name in ("own", "nb", "received", "merged", "max_score", "cell"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_unpacked_record_and_bad_arguments_raise_clearly():
    nb = build_neighbors(LINE5, 2)
    o = random_outputs(1, 5, 2, 4, 4, seed=0)
    with pytest.raises(TypeError, match="unpacks to six values: pass the record itself"):
        decode(*o, nb)  # score_coarse = () lands where the neighbours belong
    with pytest.raises(TypeError, match=r"decode_details\(outputs, neighbors\)"):
        decode_details(o.score, o.offset_x, nb)
    with pytest.raises(TypeError, match="expected a PIPOutputs record"):
        decode([o.score], nb)
    with pytest.raises(TypeError, match="missing the neighbour tables"):
        decode(o)
    with pytest.raises(TypeError, match="unexpected extra arguments"):
        decode(o, nb, True, merge=False)
