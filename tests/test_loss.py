"""pip_loss against hand-computed numbers and a re-implementation of official compute_loss_pip."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipnet_lit.pip import PIPLoss, PIPOutputs, build_neighbors, encode_targets, pip_loss


def hand_case():
    """L=2, num_nb=1, grid 2x2. Targets: lm0 (0.3, 0.2) -> cell 0, offsets (0.6, 0.4), nb (1.6, 1.2);
    lm1 (0.8, 0.6) -> cell 3, offsets (0.6, 0.2), nb (-0.4, -0.6)."""
    nb = build_neighbors(torch.tensor([[0.2, 0.2], [0.8, 0.8]]), 1)
    targets = encode_targets(torch.tensor([[[0.3, 0.2], [0.8, 0.6]]], dtype=torch.float64), nb, (2, 2))
    score = torch.zeros(1, 2, 2, 2)
    score[0, 0, 0, 0] = 0.5
    score[0, 1, 0, 0] = 2.0
    ox = torch.full((1, 2, 2, 2), 9.0)  # 9 everywhere except at the ground-truth cells: must not matter
    ox[0, 0, 0, 0] = 0.0
    ox[0, 1, 1, 1] = 1.0
    oy = torch.zeros(1, 2, 2, 2)
    nbx = torch.full((1, 2, 2, 2), 1.0)
    nby = torch.full((1, 2, 2, 2), -1.0)
    return PIPOutputs(score, ox, oy, nbx, nby), targets


def test_hand_computed_default_loss():
    outputs, targets = hand_case()
    assert targets.cell.tolist() == [[0, 3]]
    loss = pip_loss(outputs, targets)
    assert isinstance(loss, PIPLoss)
    # cls l2 over 8 entries: (0.5-1)^2 + (2-0)^2 + (0-1)^2 = 5.25 -> 0.65625
    assert loss.cls.item() == pytest.approx(0.65625, abs=1e-6)
    assert loss.x.item() == pytest.approx((0.6 + 0.4) / 2, abs=1e-6)  # |0-0.6|, |1-0.6|
    assert loss.y.item() == pytest.approx((0.4 + 0.2) / 2, abs=1e-6)
    assert loss.nb_x.item() == pytest.approx((0.6 + 1.4) / 2, abs=1e-6)  # |1-1.6|, |1+0.4|
    assert loss.nb_y.item() == pytest.approx((2.2 + 0.4) / 2, abs=1e-6)  # |-1-1.2|, |-1+0.6|
    assert loss.total.item() == pytest.approx(10 * 0.65625 + 0.5 + 0.3 + 1.0 + 1.3, abs=1e-5)


def test_hand_computed_l1_cls_l2_reg_and_weights():
    outputs, targets = hand_case()
    loss = pip_loss(outputs, targets, cls_loss="l1", reg_loss="l2", cls_weight=2.0, reg_weight=0.5)
    assert loss.cls.item() == pytest.approx(3.5 / 8, abs=1e-6)
    assert loss.x.item() == pytest.approx((0.36 + 0.16) / 2, abs=1e-6)
    assert loss.y.item() == pytest.approx((0.16 + 0.04) / 2, abs=1e-6)
    assert loss.nb_x.item() == pytest.approx((0.36 + 1.96) / 2, abs=1e-6)
    assert loss.nb_y.item() == pytest.approx((4.84 + 0.16) / 2, abs=1e-6)
    assert loss.total.item() == pytest.approx(2 * 3.5 / 8 + 0.5 * (0.26 + 0.1 + 1.16 + 2.5), abs=1e-5)


def test_hand_computed_focal():
    outputs, targets = hand_case()
    sig = lambda s: 1 / (1 + math.exp(-s))  # noqa: E731
    pos = lambda s: -((1 - sig(s)) ** 2) * math.log(sig(s))  # noqa: E731
    neg = lambda s: -(sig(s) ** 2) * math.log(1 - sig(s))  # noqa: E731  (target 0 -> (1 - y)^4 = 1)
    # positives: lm0 cell0 (s=0.5), lm1 cell3 (s=0); negatives: five zeros and lm1 cell0 (s=2)
    expected = (pos(0.5) + pos(0.0) + 5 * neg(0.0) + neg(2.0)) / 2
    loss = pip_loss(outputs, targets, cls_loss="focal")
    assert loss.cls.item() == pytest.approx(expected, rel=1e-5)
    assert loss.x.item() == pytest.approx(0.5, abs=1e-6)


def reference_compute_loss_pip(outputs, labels, criterion_cls, criterion_reg, num_nb):
    """Official compute_loss_pip: gather at argmax of the label score map, nn.*Loss mean reductions."""
    out_map, out_x, out_y, out_nbx, out_nby = outputs[:5]
    lab_map, lab_x, lab_y, lab_nbx, lab_nby = labels
    b, c, h, w = out_map.shape
    ids = torch.argmax(lab_map.view(b * c, -1), 1).view(-1, 1)
    ids_nb = ids.repeat(1, num_nb).view(-1, 1)

    def sel(t, rows, index):
        return torch.gather(t.reshape(rows, -1), 1, index)

    return (
        criterion_cls(out_map, lab_map),
        criterion_reg(sel(out_x, b * c, ids), sel(lab_x, b * c, ids)),
        criterion_reg(sel(out_y, b * c, ids), sel(lab_y, b * c, ids)),
        criterion_reg(sel(out_nbx, b * c * num_nb, ids_nb), sel(lab_nbx, b * c * num_nb, ids_nb)),
        criterion_reg(sel(out_nby, b * c * num_nb, ids_nb), sel(lab_nby, b * c * num_nb, ids_nb)),
    )


@pytest.mark.parametrize(("cls_name", "reg_name"), [("l2", "l1"), ("l1", "l2")])
def test_matches_official_on_random_batch(cls_name, reg_name):
    gen = torch.Generator().manual_seed(0)
    nb = build_neighbors(torch.rand(68, 2, generator=gen), 10)
    targets = encode_targets(torch.rand(2, 68, 2, generator=gen) * 1.2 - 0.1, nb, (8, 8))
    outputs = PIPOutputs(
        *(
            torch.randn(t.shape, generator=gen)
            for t in (targets.score, targets.offset_x, targets.offset_y, targets.nb_x, targets.nb_y)
        )
    )
    crit = {"l2": nn.MSELoss(), "l1": nn.L1Loss()}
    ref = reference_compute_loss_pip(
        outputs,
        (targets.score, targets.offset_x, targets.offset_y, targets.nb_x, targets.nb_y),
        crit[cls_name],
        crit[reg_name],
        10,
    )
    loss = pip_loss(outputs, targets, cls_loss=cls_name, reg_loss=reg_name)
    for got, exp in zip((loss.cls, loss.x, loss.y, loss.nb_x, loss.nb_y), ref, strict=True):
        torch.testing.assert_close(got, exp, rtol=1e-6, atol=1e-7)
    exp_total = 10 * ref[0] + ref[1] + ref[2] + ref[3] + ref[4]
    torch.testing.assert_close(loss.total, exp_total, rtol=1e-6, atol=1e-6)


def test_gradients_flow_only_through_gt_cells_for_offsets():
    outputs, targets = hand_case()
    outputs = PIPOutputs(*(o.clone().requires_grad_(True) for o in outputs[:5]))
    pip_loss(outputs, targets).total.backward()
    gx = outputs.offset_x.grad
    assert gx[0, 0, 0, 0] != 0 and gx[0, 1, 1, 1] != 0
    assert int((gx != 0).sum()) == 2
    assert int((outputs.score.grad != 0).sum()) == 3  # l2 gradient is zero where score == target


def test_unknown_names_and_shape_errors():
    outputs, targets = hand_case()
    with pytest.raises(ValueError, match="unknown cls_loss 'mse'; valid names: l2, l1, focal"):
        pip_loss(outputs, targets, cls_loss="mse")
    with pytest.raises(ValueError, match="unknown reg_loss 'smooth_l1'; valid names: l1, l2"):
        pip_loss(outputs, targets, reg_loss="smooth_l1")
    bad = outputs._replace(nb_x=outputs.nb_x[:, :1])
    with pytest.raises(ValueError, match=r"outputs.nb_x has shape \(1, 1, 2, 2\) but targets.nb_x has"):
        pip_loss(bad, targets)
