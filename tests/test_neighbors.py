"""Mean face and neighbour tables vs hand-built cases and a loop version of official get_meanface."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipnet_lit.pip import Neighbors, build_neighbors, compute_meanface


def reference_get_meanface(meanface: np.ndarray, num_nb: int):
    """Straight loop version of the official get_meanface (from the reference's description)."""
    num_lms = meanface.shape[0]
    indices = []
    for i in range(num_lms):
        dists = np.sum(np.power(meanface[i, :] - meanface, 2), axis=1)
        indices.append(np.argsort(dists)[1 : 1 + num_nb])
    rev = {t: ([], []) for t in range(num_lms)}
    for i in range(num_lms):
        for j in range(num_nb):
            rev[indices[i][j]][0].append(i)
            rev[indices[i][j]][1].append(j)
    max_len = max(len(rev[t][0]) for t in range(num_lms))
    r1, r2 = [], []
    for t in range(num_lms):
        a, b = rev[t]  # an empty list makes the official tables too short (its merge then fails)
        r1 += (a + a * 10)[:max_len]
        r2 += (b + b * 10)[:max_len]
    return np.array(indices), r1, r2, max_len


# Five points on a line at x = 0, 1, 3, 7, 9 (sixteenths): distances are exact and tie-free.
LINE5 = np.array([[0, 8], [1, 8], [3, 8], [7, 8], [9, 8]], dtype=np.float64) / 16.0
LINE5_INDICES = [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]]
# reverse lists: t0 <- (1,0),(2,1); t1 <- (0,0),(2,0); t2 <- (0,1),(1,1),(3,1),(4,1); t3 <- (4,0); t4 <- (3,0)
LINE5_MAX_LEN = 4
LINE5_REV1 = [1, 2, 1, 2, 0, 2, 0, 2, 0, 1, 3, 4, 4, 4, 4, 4, 3, 3, 3, 3]
LINE5_REV2 = [0, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]


def test_hand_built_neighbours_and_padding():
    nb = build_neighbors(torch.from_numpy(LINE5), 2)
    assert nb.indices.dtype == torch.long and nb.reverse_index1.dtype == torch.long
    assert nb.indices.tolist() == LINE5_INDICES
    assert nb.max_len == LINE5_MAX_LEN
    assert nb.reverse_index1.tolist() == LINE5_REV1
    assert nb.reverse_index2.tolist() == LINE5_REV2
    assert nb.num_landmarks == 5 and nb.num_nb == 2


def test_hand_built_matches_reference():
    indices, r1, r2, max_len = reference_get_meanface(LINE5, 2)
    assert indices.tolist() == LINE5_INDICES and r1 == LINE5_REV1 and r2 == LINE5_REV2 and max_len == 4


@pytest.mark.parametrize(
    ("num_lms", "num_nb", "seed"), [(68, 10, 0), (98, 10, 1), (29, 5, 2), (19, 2, 3), (68, 5, 4)]
)
def test_random_meanfaces_match_reference(num_lms, num_nb, seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        mf = rng.random((num_lms, 2))
        indices, r1, r2, max_len = reference_get_meanface(mf, num_nb)
        if len(r1) != num_lms * max_len:
            continue
        nb = build_neighbors(mf, num_nb)
        assert nb.indices.tolist() == indices.tolist()
        assert nb.max_len == max_len
        assert nb.reverse_index1.tolist() == r1
        assert nb.reverse_index2.tolist() == r2
        return
    pytest.fail("no mean face where every landmark gets a vote")


@pytest.mark.parametrize("num_nb", [3, 4, 8])
def test_ties_resolve_like_np_argsort(num_nb):
    # A 6x6 lattice: every point has many equidistant neighbours, so tie order matters.
    g = np.arange(6, dtype=np.float64) / 8.0
    mf = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    indices, r1, r2, max_len = reference_get_meanface(mf, num_nb)
    nb = build_neighbors(mf, num_nb)
    assert nb.indices.tolist() == indices.tolist()
    assert (nb.reverse_index1.tolist(), nb.reverse_index2.tolist(), nb.max_len) == (r1, r2, max_len)


def test_float32_tensor_input_uses_float64_like_file():
    mf = torch.rand(68, 2, generator=torch.Generator().manual_seed(5))
    indices, *_ = reference_get_meanface(mf.double().numpy(), 10)
    assert build_neighbors(mf, 10).indices.tolist() == indices.tolist()


def test_landmark_without_votes_is_marked_and_warned():
    # x = 0, 1, 3, 7, 15: nobody has landmark 4 among its two nearest.
    mf = np.array([[0, 8], [1, 8], [3, 8], [7, 8], [15, 8]], dtype=np.float64) / 16.0
    with pytest.warns(UserWarning, match=r"landmarks \[4\]"):
        nb = build_neighbors(mf, 2)
    rev1 = nb.reverse_index1.view(5, nb.max_len)
    assert rev1[4].tolist() == [-1] * nb.max_len
    assert (rev1[:4] >= 0).all()
    assert nb.indices.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1], [3, 2]]


def test_dataclass_is_frozen_and_moves():
    nb = build_neighbors(LINE5, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        nb.max_len = 3  # type: ignore[misc]
    moved = nb.to("cpu")
    assert isinstance(moved, Neighbors) and moved.max_len == nb.max_len
    assert torch.equal(moved.reverse_index2, nb.reverse_index2)


@pytest.mark.parametrize(
    ("meanface", "num_nb", "match"),
    [
        (LINE5, 5, r"num_nb=5 must be in \[1, L-1\]"),
        (LINE5, 7, "num_nb=7"),
        (LINE5, 0, "num_nb=0"),
        (LINE5, 2.0, "num_nb must be an int"),
        (LINE5.reshape(-1), 2, r"shape \(L, 2\)"),
        (np.zeros((4, 3)), 2, r"shape \(L, 2\)"),
        (np.array([[0.1, np.nan], [0.2, 0.2], [0.3, 0.3]]), 1, r"NaN/inf.*\[0\]"),
    ],
)
def test_build_neighbors_errors(meanface, num_nb, match):
    with pytest.raises(ValueError, match=match):
        build_neighbors(meanface, num_nb)


def test_compute_meanface_matches_official_numpy_mean():
    rng = np.random.default_rng(0)
    lms = rng.random((37, 68, 2))
    expected = np.mean(lms.reshape(37, 136), axis=0).reshape(68, 2)
    out = compute_meanface(lms)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, expected)
    out_t = compute_meanface(torch.from_numpy(lms).float())
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), expected, atol=1e-7)


def test_compute_meanface_hand_values():
    lms = [[[0.0, 0.0], [1.0, 0.5]], [[0.5, 1.0], [0.0, 0.25]]]
    np.testing.assert_array_equal(compute_meanface(lms), [[0.25, 0.5], [0.5, 0.375]])


@pytest.mark.parametrize(
    ("lms", "match"),
    [
        (np.zeros((3, 68)), r"\(N, L, 2\)"),
        (np.zeros((0, 68, 2)), "at least one sample"),
        (np.zeros((2, 5, 3)), r"\(N, L, 2\)"),
        (np.array([[[0.1, 0.1]], [[np.nan, 0.1]]]), r"samples \[1\]"),
    ],
)
def test_compute_meanface_errors(lms, match):
    with pytest.raises(ValueError, match=match):
        compute_meanface(lms)
