"""Pseudo-label diagnostics vs the truth: NME/FR, cell hits, confidence bins, Spearman, selection, output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipnet_lit.ssl.diagnostics import (
    diagnostics_markdown,
    plot_confidence_vs_error,
    pseudo_label_diagnostics,
    summary_cells,
)

EYES = [[0], [1]]  # inter_ocular = distance between landmarks 0 and 1 (0.4 below)

# One true face for all four: lm0 (0.3, 0.3), lm1 (0.7, 0.3) -> inter-ocular 0.4; lm2 sits exactly on the
# x = 0.5 cell boundary (cell 4 of 8, 2 of 4, 1 of 2); lm3 (0.5, 0.9) -> y cells 7 of 8, 3 of 4, 1 of 2.
TRUTH_FACE = [[0.3, 0.3], [0.7, 0.3], [0.5, 0.6], [0.5, 0.9]]


def _tiny_case():
    """Faces A (perfect), B, C, D with hand-computed errors, NMEs and cell hits (see the comments)."""
    truth = np.array([TRUTH_FACE] * 4, dtype=np.float64)
    pred = truth.copy()
    # B: lm2 x + 0.13 -> (0.63, 0.6): err 0.13; x cell 5.04 -> 5 != 4 (8x8 miss), 2.52 -> 2 (hit), 1.26 -> 1
    # (hit). NME = 0.13 / 4 / 0.4 = 0.08125.
    pred[1, 2] = [0.63, 0.6]
    # C: lm0 + (0.03, 0.04) -> (0.33, 0.34): err 0.05, same cell on every grid (2.64/2.72 -> 2,
    # 1.32/1.36 -> 1, 0.66/0.68 -> 0); lm3 y -> 1.3 (outside the crop): err 0.4, clamps to the true
    # bottom cell on every grid.
    # NME = 0.45 / 4 / 0.4 = 0.28125.
    pred[2, 0] = [0.33, 0.34]
    pred[2, 3] = [0.5, 1.3]
    # D: lm1 + (0.06, 0.08) -> (0.76, 0.38): err 0.1; 8x8 (6, 3) vs (5, 2) miss, 4x4 (3, 1) vs (2, 1) miss,
    # 2x2 (1, 0) vs (1, 0) hit; lm3 x -> -0.2: err 0.7, clamps to cell 0 != the true x cell on every grid.
    # NME = 0.8 / 4 / 0.4 = 0.5.
    pred[3, 1] = [0.76, 0.38]
    pred[3, 3] = [-0.2, 0.9]
    scores = np.array([0.8, 0.9, 0.4, 0.2])  # A, B, C, D
    return pred, truth, scores


NMES = np.array([0.0, 0.08125, 0.28125, 0.5])  # A, B, C, D by hand


def _diag(**kwargs):
    pred, truth, scores = _tiny_case()
    return pseudo_label_diagnostics(pred, truth, scores, norm="inter_ocular", norm_indices=EYES, **kwargs)


def _rows(diag):
    return {row["rule"]: row for row in diag["selection"]}


def test_nme_fr_and_cell_hits_by_hand():
    diag = _diag(grid=8, bins=2)
    assert diag["count"] == 4
    assert diag["nme"] == pytest.approx(0.8625 / 4)  # (0 + 0.08125 + 0.28125 + 0.5) / 4 = 0.215625
    assert diag["median_nme"] == pytest.approx((0.08125 + 0.28125) / 2)
    assert diag["fr@0.10"] == pytest.approx(0.5)  # C and D
    # 16 (face, landmark) pairs. 8x8: misses B lm2, D lm1, D lm3. 4x4: D lm1, D lm3. 2x2: D lm3.
    assert diag["cell_hit"] == pytest.approx({"8x8": 13 / 16, "4x4": 14 / 16, "2x2": 15 / 16})
    assert list(diag["cell_hit"]) == ["8x8", "4x4", "2x2"]
    assert (diag["task"], diag["task_grid"], diag["task_cell_hit"]) == ("std", "8x8", pytest.approx(13 / 16))
    assert (diag["norm"], diag["grid"]) == ("inter_ocular", 8)


@pytest.mark.parametrize(("task", "key", "value"), [("cls2", "4x4", 14 / 16), ("cls3", "2x2", 15 / 16)])
def test_task_cell_hit_follows_the_task_grid(task, key, value):
    diag = _diag(task=task)
    assert diag["task_grid"] == key
    assert diag["task_cell_hit"] == pytest.approx(value)
    assert summary_cells(diag)["pl_cell_hit"] == pytest.approx(value)


def test_grid_levels_that_do_not_divide_are_skipped_and_bad_tasks_rejected():
    diag = _diag(grid=6)  # 6 / 4 is not an integer grid
    assert list(diag["cell_hit"]) == ["6x6", "3x3"]
    # 6x6: B lm2 x 3.78 -> 3 == 3 hit; C lm0 (1.98, 2.04) -> (1, 2) vs (1.8, 1.8) -> (1, 1) miss;
    # D lm1 (4.56, 2.28) -> (4, 2) vs (4.2, 1.8) -> (4, 1) miss; D lm3 miss
    assert diag["cell_hit"]["6x6"] == pytest.approx(13 / 16)
    with pytest.raises(ValueError, match="cls3.*not divisible by 4"):
        _diag(grid=6, task="cls3")
    with pytest.raises(ValueError, match="unknown task 'cls9'"):
        _diag(task="cls9")


def test_confidence_bins_by_hand():
    diag = _diag(bins=2)
    low, high = diag["confidence_bins"]  # ascending score: [D 0.2, C 0.4], [A 0.8, B 0.9]
    assert low == pytest.approx(
        {"score_lo": 0.2, "score_hi": 0.4, "mean_score": 0.3, "count": 2, "mean_nme": 0.390625, "fr": 1.0}
    )
    assert high == pytest.approx(
        {"score_lo": 0.8, "score_hi": 0.9, "mean_score": 0.85, "count": 2, "mean_nme": 0.040625, "fr": 0.0}
    )
    assert [b["count"] for b in _diag(bins=3)["confidence_bins"]] == [2, 1, 1]  # np.array_split
    assert len(_diag(bins=10)["confidence_bins"]) == 4  # never more bins than faces


def test_selection_rows_by_hand():
    rows = _rows(_diag(threshold=0.5))
    # top fractions keep ceil(f * 4) faces by score: B; B, A; B, A, C; all
    assert (rows["top_fraction=0.25"]["kept"], rows["top_fraction=0.25"]["nme"]) == (
        1,
        pytest.approx(0.08125),
    )
    assert rows["top_fraction=0.5"]["kept"] == 2
    assert rows["top_fraction=0.5"]["nme"] == pytest.approx(0.040625)
    assert rows["top_fraction=0.75"]["nme"] == pytest.approx(0.3625 / 3)
    assert rows["top_fraction=0.75"]["fr"] == pytest.approx(1 / 3)
    assert rows["top_fraction=1.0"]["kept_fraction"] == 1.0
    assert rows["top_fraction=1.0"]["nme"] == pytest.approx(0.215625)
    # score quantiles of [0.2, 0.4, 0.8, 0.9] (linear): 0.35, 0.6, 0.825 -> keep C A B; A B; B
    assert rows["threshold=0.35"]["kept"] == 3
    assert rows["threshold=0.35"]["nme"] == pytest.approx(0.3625 / 3)
    assert rows["threshold=0.6"]["kept"] == 2
    assert rows["threshold=0.825"]["kept"] == 1
    assert rows["threshold=0.825"]["fr"] == 0.0
    # the configured filter: score >= 0.5 keeps A and B
    configured = [r for r in rows.values() if r["configured"]]
    assert [r["rule"] for r in configured] == ["threshold=0.5"]
    assert (configured[0]["kept"], configured[0]["nme"]) == (2, pytest.approx(0.040625))
    assert len(rows) == 8


def test_selection_configured_rows_merge_and_empty_keep():
    diag = _diag(top_fraction=0.5)
    assert [r["rule"] for r in diag["selection"]].count("top_fraction=0.5") == 1  # deduplicated
    assert [r["rule"] for r in diag["selection"] if r["configured"]] == ["top_fraction=0.5"]
    assert len(diag["selection"]) == 7
    rows = _rows(_diag())
    assert rows["all"]["configured"] and rows["all"]["kept"] == 4  # no filter: the round keeps every face
    both = _rows(_diag(threshold=0.95, top_fraction=0.5))["threshold=0.95 & top_fraction=0.5"]
    assert both == {
        "rule": "threshold=0.95 & top_fraction=0.5",
        "kept": 0,
        "kept_fraction": 0.0,
        "nme": None,
        "fr": None,
        "configured": True,
    }


def test_spearman_by_hand_and_against_scipy():
    # tiny case: score ranks A3 B4 C2 D1, NME ranks A1 B2 C3 D4; d^2 = 4 + 4 + 1 + 9 = 18
    # rho = 1 - 6 * 18 / (4 * (16 - 1)) = -0.8
    assert _diag()["score_nme_spearman"] == pytest.approx(-0.8)
    # ties: scores [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]; NMEs increasing -> ranks [1, 2, 3, 4]
    # r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    truth = np.full((4, 1, 2), 0.5)
    pred = truth.copy()
    pred[:, 0, 0] += [0.01, 0.02, 0.03, 0.04]
    diag = pseudo_label_diagnostics(pred, truth, np.array([1.0, 2.0, 2.0, 3.0]), norm="none")
    assert diag["nme"] == pytest.approx(0.025)
    assert diag["score_nme_spearman"] == pytest.approx(np.sqrt(0.9))
    # undefined: constant scores, fewer than three faces
    assert pseudo_label_diagnostics(pred, truth, np.ones(4), norm="none")["score_nme_spearman"] is None
    assert (
        pseudo_label_diagnostics(pred[:2], truth[:2], np.arange(2.0), norm="none")["score_nme_spearman"]
        is None
    )

    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 0.8, (50, 5, 2))
    pred = truth + rng.normal(0, 0.02, truth.shape)
    scores = np.round(rng.uniform(0, 1, 50), 1)  # many ties
    landmark_scores = np.round(rng.uniform(0, 1, (50, 5)), 1)
    diag = pseudo_label_diagnostics(pred, truth, scores, norm_indices=[0, 1], landmark_scores=landmark_scores)
    nmes = np.linalg.norm(pred - truth, axis=2).mean(axis=1) / np.linalg.norm(
        truth[:, 0] - truth[:, 1], axis=1
    )
    assert diag["nme"] == pytest.approx(nmes.mean())
    assert diag["score_nme_spearman"] == pytest.approx(stats.spearmanr(scores, nmes).statistic)
    errors = np.linalg.norm(pred - truth, axis=2) / np.linalg.norm(truth[:, 0] - truth[:, 1], axis=1)[:, None]
    expected = stats.spearmanr(landmark_scores.ravel(), errors.ravel()).statistic
    assert diag["landmark_confidence_spearman"] == pytest.approx(expected)


def test_landmark_confidence_spearman_by_hand():
    # per-landmark error / norm: A 0 0 0 0; B 0 0 0.325 0; C 0.125 0 0 1; D 0 0.25 0 1.75. Scores rank them
    # exactly in reverse (higher score, lower error; equal errors get equal scores) -> rho = -1.
    errors = np.array([[0, 0, 0, 0], [0, 0, 0.325, 0], [0.125, 0, 0, 1.0], [0, 0.25, 0, 1.75]])
    diag = _diag(landmark_scores=1.0 - errors)
    assert diag["landmark_confidence_spearman"] == pytest.approx(-1.0)
    assert "landmark_confidence_spearman" not in _diag()


def test_shape_and_value_errors_name_the_problem():
    pred, truth, scores = _tiny_case()
    with pytest.raises(ValueError, match=r"pred \(4, 4, 2\) and truth \(4, 3, 2\)"):
        pseudo_label_diagnostics(pred, truth[:, :3], scores, norm_indices=EYES)
    with pytest.raises(ValueError, match=r"pred \(4, 4, 3\)"):
        pseudo_label_diagnostics(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), scores, norm_indices=EYES)
    with pytest.raises(ValueError, match=r"scores must have shape \(N,\) = \(4,\).*got \(3,\)"):
        pseudo_label_diagnostics(pred, truth, scores[:3], norm_indices=EYES)
    with pytest.raises(ValueError, match=r"no faces.*\(0, 4, 2\)"):
        pseudo_label_diagnostics(pred[:0], truth[:0], scores[:0], norm_indices=EYES)
    with pytest.raises(
        ValueError, match=r"landmark_scores must have shape \(N, L\) = \(4, 4\).*got \(4, 3\)"
    ):
        pseudo_label_diagnostics(pred, truth, scores, norm_indices=EYES, landmark_scores=np.zeros((4, 3)))
    bad = pred.copy()
    bad[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"pred has NaN/inf values at faces \[2\]"):
        pseudo_label_diagnostics(bad, truth, scores, norm_indices=EYES)
    with pytest.raises(ValueError, match="grid must be a positive int"):
        pseudo_label_diagnostics(pred, truth, scores, norm_indices=EYES, grid=0)
    with pytest.raises(ValueError, match="norm_indices"):  # nme's own error: inter_ocular needs the eyes
        pseudo_label_diagnostics(pred, truth, scores)


def _plain_json(value):
    """True if value holds only python dict / list / str / int / float / bool / None (no numpy scalars)."""
    if isinstance(value, dict):
        return all(type(k) is str and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_json_serializable_plain_types():
    diag = _diag(threshold=0.5, landmark_scores=np.ones((4, 4)) * [[1, 2, 3, 4]])
    assert _plain_json(diag)
    assert json.loads(json.dumps(diag, allow_nan=False)) == diag


def test_summary_cells():
    assert summary_cells(_diag()) == {
        "pl_nme": pytest.approx(0.215625),
        "pl_fr@0.10": 0.5,
        "pl_cell_hit": 0.8125,
        "pl_spearman": pytest.approx(-0.8),
    }
    diag = _diag(fr_threshold=0.3)
    assert diag["fr@0.30"] == pytest.approx(0.25)  # only D (0.5) fails at 0.3
    assert summary_cells(diag)["pl_fr@0.30"] == pytest.approx(0.25)


def test_markdown_shows_the_numbers():
    text = diagnostics_markdown(_diag(bins=2, threshold=0.5), title="Round 1 pseudo-labels")
    assert text.startswith("### Round 1 pseudo-labels\n")
    summary = text.splitlines()[2]
    for part in (
        "4 faces",
        "NME 21.56%",
        "FR@0.10 50.00%",
        "cell hit (8x8) 81.25%",
        "4x4 87.50%",
        "2x2 93.75%",
    ):
        assert part in summary
    assert "-0.800" in summary
    # bins table: low bin NME 39.06 %, FR 100 %; high bin 4.06 %, 0 %
    assert "| 0.2000 - 0.4000 | 0.3000 | 2 | 39.06 | 100.00 |" in text
    assert "| 0.8000 - 0.9000 | 0.8500 | 2 | 4.06 | 0.00 |" in text
    # selection table
    assert "| top_fraction=0.75 | 3 | 75.00 | 12.08 | 33.33 |" in text
    assert "| threshold=0.5 (configured) | 2 | 50.00 | 4.06 | 0.00 |" in text
    assert "| threshold=0.95 & top_fraction=0.5 (configured) | 0 | 0.00 | - | - |" in diagnostics_markdown(
        _diag(threshold=0.95, top_fraction=0.5)
    )


def test_plot_is_a_png_written_atomically(tmp_path):
    path = plot_confidence_vs_error(_diag(bins=2), tmp_path / "plots" / "pl_confidence.png")
    assert path == tmp_path / "plots" / "pl_confidence.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000
    assert [p.name for p in path.parent.iterdir()] == ["pl_confidence.png"]  # no temp file left behind
