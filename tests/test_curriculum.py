"""Curriculum self-training math: coarse targets and masks, the masked loss, its gradients, the network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipnet_lit.models import PIPNet
from pipnet_lit.pip import (
    TASKS,
    CurriculumTargets,
    PIPOutputs,
    build_neighbors,
    curriculum_loss,
    encode_curriculum_targets,
    encode_targets,
    pip_loss,
    task_ids,
)

LINE5 = (
    np.array([[0, 8], [1, 8], [3, 8], [7, 8], [9, 8]], dtype=np.float64) / 16.0
)  # neighbours of test_neighbors
FIELDS = ("score", "offset_x", "offset_y", "nb_x", "nb_y", "cell")
# random mean faces with few neighbours leave some landmark without votes; irrelevant to these tests
pytestmark = pytest.mark.filterwarnings("ignore:build_neighbors:UserWarning")


def random_outputs(targets: CurriculumTargets, seed: int, grad: bool = False) -> PIPOutputs:
    """Random raw outputs shaped like the targets (coarse maps included)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen).requires_grad_(grad)

    return PIPOutputs(
        *(rnd(getattr(targets, n)) for n in FIELDS[:5]), tuple(rnd(t) for t in targets.score_coarse)
    )


def random_batch(tasks, num_lms=19, num_nb=4, grid=(8, 8), seed=0):
    gen = torch.Generator().manual_seed(seed)
    nb = build_neighbors(torch.rand(num_lms, 2, generator=gen), num_nb)
    lms = torch.rand(len(tasks), num_lms, 2, generator=gen) * 1.3 - 0.15  # some points outside the crop
    return nb, lms, encode_curriculum_targets(lms, tasks, nb, grid)


# -- targets -------------------------------------------------------------------------------------------------


def test_hand_computed_coarse_cells_and_masks():
    nb = build_neighbors(LINE5, 2)
    # (x, y) -> full-grid cell (8x8), 2x-coarser cell (4x4), 4x-coarser cell (2x2), as (col, row):
    pts = [
        ((0.49, 0.30), (3, 2), (1, 1), (0, 0)),  # 3.92 / 1.96 / 0.98; 2.4 / 1.2 / 0.6
        ((1.0, 0.0), (7, 0), (3, 0), (1, 0)),  # x = 1.0: 8 -> 7, 4 -> 3, 2 -> 1 (clamped)
        ((-0.1, 0.5), (0, 4), (0, 2), (0, 1)),  # negative x clamps to 0; y = 0.5 exactly on an edge
        ((0.74, 1.3), (5, 7), (2, 3), (1, 1)),  # 5.92 / 2.96 / 1.48; y beyond the crop
        ((0.25, 0.124), (2, 0), (1, 0), (0, 0)),  # 2.0 / 1.0 / 0.5; 0.992 / 0.496 / 0.248
    ]
    lms = torch.tensor([[p for p, *_ in pts]] * 3, dtype=torch.float64)
    t = encode_curriculum_targets(lms, ["std", "cls2", "cls3"], nb, (8, 8))
    assert isinstance(t, CurriculumTargets)
    assert [tuple(m.shape) for m in t.score_coarse] == [(3, 5, 4, 4), (3, 5, 2, 2)]
    for i, (_, full, c2, c4) in enumerate(pts):
        assert t.cell[0, i].item() == full[1] * 8 + full[0]
        for maps, (cx, cy) in ((t.score, full), (t.score_coarse[0], c2), (t.score_coarse[1], c4)):
            for b in range(3):  # every sample gets every map; the masks choose
                assert maps[b, i, cy, cx].item() == 1.0, (i, cx, cy)
                assert maps[b, i].sum().item() == 1.0
    assert t.task.tolist() == [0, 1, 2]
    assert t.map_mask.tolist() == [[True, False, False], [False, True, False], [False, False, True]]
    assert t.reg_mask.tolist() == [True, False, False]
    assert all(m.dtype == torch.float32 for m in (t.score, *t.score_coarse))


def test_full_grid_fields_are_encode_targets_exactly():
    nb, lms, t = random_batch(["cls3", "std", "cls2", "std"], seed=3)
    ref = encode_targets(lms, nb, (8, 8))
    for name in FIELDS:
        assert torch.equal(getattr(t, name), getattr(ref, name)), name
    p = t.pip_targets()
    assert all(torch.equal(getattr(p, n), getattr(ref, n)) for n in FIELDS)


def test_non_square_grid_uses_w_for_x_and_h_for_y():
    nb = build_neighbors(LINE5, 2)
    lms = torch.tensor([[[0.3, 0.6]] * 5])
    t = encode_curriculum_targets(lms, ["cls2"], nb, (4, 8))  # H=4, W=8 -> (2, 4) and (1, 2)
    assert [tuple(m.shape[2:]) for m in t.score_coarse] == [(2, 4), (1, 2)]
    # x: 0.3 * 4 = 1.2 -> col 1, 0.3 * 2 = 0.6 -> col 0; y: 0.6 * 2 = 1.2 -> row 1, 0.6 * 1 -> row 0
    assert t.score_coarse[0][0, 0, 1, 1] == 1 and t.score_coarse[1][0, 0, 0, 0] == 1


def reference_coarse_maps(lms: np.ndarray, h: int, w: int) -> np.ndarray:
    """Per-landmark loop in the official style: floor(x * map width), clamped, one-hot (one sample)."""
    out = np.zeros((lms.shape[0], h, w), dtype=np.float32)
    for i, (x, y) in enumerate(lms):
        mu_x = min(max(0, int(math.floor(x * w))), w - 1)
        mu_y = min(max(0, int(math.floor(y * h))), h - 1)
        out[i, mu_y, mu_x] = 1
    return out


@pytest.mark.parametrize("grid", [(8, 8), (4, 4), (12, 8)])
def test_random_batch_coarse_maps_equal_loop_reference(grid):
    gen = torch.Generator().manual_seed(sum(grid))
    nb = build_neighbors(torch.rand(68, 2, generator=gen), 10)
    lms = torch.rand(3, 68, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    lms[0, :4] = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.5, 0.25], [0.75, 0.125]], dtype=torch.float64)
    t = encode_curriculum_targets(lms, ["std", "cls2", "cls3"], nb, grid)
    h, w = grid
    for b in range(3):
        for k, f in enumerate((2, 4)):
            ref = torch.from_numpy(reference_coarse_maps(lms[b].numpy(), h // f, w // f))
            assert torch.equal(t.score_coarse[k][b], ref), (b, f)


def test_task_ids_names_and_tensors():
    assert TASKS == ("std", "cls2", "cls3")
    assert task_ids(["cls3", "std", "cls2", "std"]).tolist() == [2, 0, 1, 0]
    assert task_ids(("std",), batch_size=1).dtype == torch.long
    ids = torch.tensor([2, 0, 1], dtype=torch.int32)
    assert task_ids(ids).dtype == torch.long and task_ids(ids).tolist() == [2, 0, 1]
    nb, lms, by_name = random_batch(["cls3", "std", "cls2"], seed=5)
    by_id = encode_curriculum_targets(lms, torch.tensor([2, 0, 1]), nb, (8, 8))
    assert torch.equal(by_id.map_mask, by_name.map_mask) and torch.equal(by_id.task, by_name.task)


@pytest.mark.parametrize(
    ("tasks", "match"),
    [
        (["std", "cls4"], "unknown curriculum task.*'cls4'.*valid names: std, cls2, cls3"),
        ("std", "one task per sample"),
        (torch.tensor([0.0, 1.0]), "integer tensor"),
        (torch.tensor([0, 3]), r"\[0, 2\]"),
        (torch.tensor([[0, 1]]), r"shape \(B,\)"),
        (["std"], "1 task.*batch of 2"),
    ],
)
def test_task_errors(tasks, match):
    nb = build_neighbors(LINE5, 2)
    with pytest.raises(ValueError, match=match):
        encode_curriculum_targets(torch.rand(2, 5, 2), tasks, nb, (8, 8))


def test_grid_must_divide_by_four_and_landmarks_validated():
    nb = build_neighbors(LINE5, 2)
    with pytest.raises(ValueError, match=r"grid \(6, 8\) must be divisible by 4"):
        encode_curriculum_targets(torch.rand(1, 5, 2), ["std"], nb, (6, 8))
    with pytest.raises(ValueError, match="encode_curriculum_targets: landmarks have L=4"):
        encode_curriculum_targets(torch.rand(1, 4, 2), ["std"], nb, (8, 8))


def test_to_moves_every_field_and_keeps_the_tuple():
    _, _, t = random_batch(["std", "cls3"])
    moved = t.to("meta")
    assert isinstance(moved.score_coarse, tuple) and len(moved.score_coarse) == 2
    assert all(m.device.type == "meta" for m in moved.score_coarse)
    assert all(getattr(moved, n).device.type == "meta" for n in (*FIELDS, "task", "map_mask"))
    assert t.score.device.type == "cpu"


# -- loss ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls_name", "reg_name"), [("l2", "l1"), ("l1", "l2"), ("l2", "l2")])
def test_all_std_batch_equals_pip_loss_exactly(cls_name, reg_name):
    _, _, t = random_batch(["std"] * 3, num_lms=68, num_nb=10, seed=1)
    outputs = random_outputs(t, seed=2, grad=True)
    kw = {"cls_loss": cls_name, "reg_loss": reg_name, "cls_weight": 10.0, "reg_weight": 1.0}
    ours = curriculum_loss(outputs, t, **kw)
    ref = pip_loss(outputs, t.pip_targets(), **kw)
    for name in ("total", "cls", "x", "y", "nb_x", "nb_y"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    # the same gradients too, bit for bit
    g_ours = torch.autograd.grad(ours.total, outputs[:5])
    g_ref = torch.autograd.grad(ref.total, outputs[:5])
    assert all(torch.equal(a, b) for a, b in zip(g_ours, g_ref, strict=True))


def test_hand_computed_mixed_batch():
    """L=2, 8x8 grid. All outputs 0, except the cls3 sample's 4x-coarser map (2 everywhere) and maps the
    masks must hide (the std sample's coarse maps, the coarse samples' full map and offsets: 100)."""
    nb = build_neighbors(np.array([[0.2, 0.2], [0.8, 0.8]]), 1)
    lms = torch.tensor([[[0.3, 0.2], [0.8, 0.6]]] * 3, dtype=torch.float64)
    t = encode_curriculum_targets(lms, ["std", "cls2", "cls3"], nb, (8, 8))
    zeros = [torch.zeros_like(getattr(t, n)) for n in FIELDS[:5]]
    coarse = [torch.zeros_like(m) for m in t.score_coarse]
    coarse[1][2] = 2.0
    coarse[0][0], coarse[1][0] = 100.0, 100.0  # std sample: coarse maps unsupervised
    zeros[0][1:] = 100.0  # coarse samples: full map unsupervised ...
    for m in zeros[1:]:
        m[1:] = 100.0  # ... and offsets / neighbours too
    loss = curriculum_loss(PIPOutputs(*zeros, tuple(coarse)), t)
    # cls: std 2 landmarks x 1 positive cell = 2; cls2 likewise 2; cls3 on its 2x2 map, per landmark
    # (2 - 1)^2 + 3 * 2^2 = 13 -> 26. One shared count: 2 * 64 + 2 * 16 + 2 * 4 = 168 cells.
    assert loss.cls.item() == pytest.approx((2 + 2 + 26) / 168, abs=1e-7)
    # reg over the std sample only (2 landmarks): lm0 (2.4, 1.6) -> cell (2, 1), offsets (0.4, 0.6);
    # lm1 (6.4, 4.8) -> cell (6, 4), offsets (0.4, 0.8); neighbour of lm0 is lm1: (6.4 - 2, 4.8 - 1),
    # of lm1 is lm0: (2.4 - 6, 1.6 - 4)
    assert loss.x.item() == pytest.approx((0.4 + 0.4) / 2, abs=1e-6)
    assert loss.y.item() == pytest.approx((0.6 + 0.8) / 2, abs=1e-6)
    assert loss.nb_x.item() == pytest.approx((4.4 + 3.6) / 2, abs=1e-6)
    assert loss.nb_y.item() == pytest.approx((3.8 + 2.4) / 2, abs=1e-6)
    expected_total = 10 * 30 / 168 + 0.4 + 0.7 + 4.0 + 3.1
    assert loss.total.item() == pytest.approx(expected_total, abs=1e-5)


def reference_official_style(outputs, t, cls_name, reg_name, num_nb):
    """Per-sample loop building full-size 0/1 masks as the official GSSL dataset does, then the official
    reduction: criterion(out * mask, label * mask) summed, divided by the mask sum if non-zero."""
    b, num_lms, h, w = outputs.score.shape
    maps_out = [outputs.score, *outputs.score_coarse]
    maps_lab = [t.score, *t.score_coarse]
    masks = [torch.zeros_like(m) for m in maps_lab]
    reg_masks = [torch.zeros(b, num_lms), torch.zeros(b, num_lms * num_nb)]
    for s in range(b):
        task = TASKS[int(t.task[s])]
        masks[TASKS.index(task)][s] = 1.0
        if task == "std":
            reg_masks[0][s] = 1.0
            reg_masks[1][s] = 1.0
    crit = {
        "l2": torch.nn.MSELoss(reduction="sum"),
        "l1": torch.nn.L1Loss(reduction="sum"),
    }
    flat = lambda ms: torch.cat([m.reshape(b * num_lms, -1) for m in ms], 1)  # noqa: E731
    o, lab, m = flat(maps_out), flat(maps_lab), flat(masks)
    cls = crit[cls_name](o * m, lab * m)
    cls = cls / m.sum() if m.sum() != 0 else cls
    ids = t.score.reshape(b * num_lms, -1).argmax(1).view(-1, 1)
    ids_nb = ids.repeat(1, num_nb).view(-1, 1)
    terms = []
    for name, index, mask in (
        ("offset_x", ids, reg_masks[0]),
        ("offset_y", ids, reg_masks[0]),
        ("nb_x", ids_nb, reg_masks[1]),
        ("nb_y", ids_nb, reg_masks[1]),
    ):
        rows = index.shape[0]
        pred = getattr(outputs, name).reshape(rows, -1).gather(1, index).view(-1)
        lab_v = getattr(t, name).reshape(rows, -1).gather(1, index).view(-1)
        mk = mask.reshape(-1)
        val = crit[reg_name](pred * mk, lab_v * mk)
        terms.append(val / mk.sum() if mk.sum() != 0 else val)
    return cls, terms


@pytest.mark.parametrize(
    ("tasks", "cls_name", "reg_name"),
    [
        (["std", "cls2", "cls3", "cls3", "std", "cls2"], "l2", "l1"),
        (["cls2", "std", "cls3"], "l1", "l2"),
        (["cls3", "cls2", "cls3"], "l2", "l1"),  # no std sample: regression sums stay undivided (zero)
    ],
)
def test_mixed_batch_matches_official_style_reference(tasks, cls_name, reg_name):
    _, _, t = random_batch(tasks, num_lms=19, num_nb=4, seed=len(tasks))
    outputs = random_outputs(t, seed=7)
    loss = curriculum_loss(outputs, t, cls_loss=cls_name, reg_loss=reg_name)
    ref_cls, ref_reg = reference_official_style(outputs, t, cls_name, reg_name, 4)
    torch.testing.assert_close(loss.cls, ref_cls, rtol=1e-6, atol=1e-7)
    for got, exp in zip((loss.x, loss.y, loss.nb_x, loss.nb_y), ref_reg, strict=True):
        torch.testing.assert_close(got, exp, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(loss.total, 10 * ref_cls + sum(ref_reg), rtol=1e-6, atol=1e-6)
    if "std" not in tasks:
        assert loss.x.item() == 0 and loss.nb_y.item() == 0


def test_cls3_sample_sends_gradient_only_through_the_coarsest_map():
    _, _, t = random_batch(["std", "cls2", "cls3"], seed=4)
    outputs = random_outputs(t, seed=8, grad=True)
    curriculum_loss(outputs, t).total.backward()
    full, c2, c4 = outputs.score.grad, *(m.grad for m in outputs.score_coarse)
    # sample 2 (cls3): only the 4x-coarser map
    assert torch.count_nonzero(full[2]) == 0 and torch.count_nonzero(c2[2]) == 0
    assert torch.count_nonzero(c4[2]) == c4[2].numel()
    # sample 1 (cls2): only the 2x-coarser map; sample 0 (std): only the full map
    assert torch.count_nonzero(c2[1]) == c2[1].numel()
    assert torch.count_nonzero(full[1]) == 0 and torch.count_nonzero(c4[1]) == 0
    assert torch.count_nonzero(full[0]) == full[0].numel()
    assert torch.count_nonzero(c2[0]) == 0 and torch.count_nonzero(c4[0]) == 0
    for name in ("offset_x", "offset_y", "nb_x", "nb_y"):
        g = getattr(outputs, name).grad
        assert torch.count_nonzero(g[1:]) == 0, name  # coarse samples: no regression gradient
        assert torch.count_nonzero(g[0]) == g.shape[1], name  # std: one cell per channel


def test_only_cls3_batch_trains_cls_layer_and_trunk_but_no_regression_head():
    torch.manual_seed(0)
    net = PIPNet("resnet18", num_landmarks=5, num_nb=2, input_size=128, coarse_levels=2)
    nb = build_neighbors(LINE5, 2)
    lms = torch.rand(2, 5, 2)
    t = encode_curriculum_targets(lms[:1], ["cls3"], nb, net.grid_size())
    loss = curriculum_loss(net(torch.randn(1, 3, 128, 128)), t)
    loss.total.backward()
    assert loss.x.item() == loss.y.item() == loss.nb_x.item() == loss.nb_y.item() == 0
    assert torch.count_nonzero(net.cls_layer.weight.grad) > 0
    assert torch.count_nonzero(net.layer4[1].conv2.weight.grad) > 0
    for name in ("x_layer", "y_layer", "nb_x_layer", "nb_y_layer"):
        layer = getattr(net, name)
        for p in (layer.weight, layer.bias):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    # and a std sample does reach them
    net.zero_grad()
    t_std = encode_curriculum_targets(lms, ["cls3", "std"], nb, net.grid_size())
    curriculum_loss(net(torch.randn(2, 3, 128, 128)), t_std).total.backward()
    assert torch.count_nonzero(net.x_layer.weight.grad) > 0 and torch.count_nonzero(net.nb_y_layer.bias.grad)


def test_loss_errors():
    _, _, t = random_batch(["std", "cls2"])
    outputs = random_outputs(t, seed=0)
    with pytest.raises(ValueError, match="cls_loss 'focal' is not supported.*official GSSL"):
        curriculum_loss(outputs, t, cls_loss="focal")
    with pytest.raises(ValueError, match="unknown reg_loss 'smooth_l1'"):
        curriculum_loss(outputs, t, reg_loss="smooth_l1")
    with pytest.raises(ValueError, match=r"0 coarse score map\(s\) but the targets 2.*coarse_levels=2"):
        curriculum_loss(outputs._replace(score_coarse=()), t)
    with pytest.raises(ValueError, match=r"score_coarse\[1\] has shape"):
        curriculum_loss(outputs._replace(score_coarse=(outputs.score_coarse[0], outputs.score)), t)
    with pytest.raises(ValueError, match="targets must be CurriculumTargets"):
        curriculum_loss(outputs, t.pip_targets())
