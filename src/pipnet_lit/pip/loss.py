"""PIP training losses: supervised (official lib/functions.py compute_loss_pip, weights as in lib/train.py)
and curriculum self-training (official lib/functions_gssl.py compute_loss_pip, criteria in lib/train_gssl.py).

Each term is an elementwise loss summed over its (supervised) elements and divided by their count.
Regression terms look only at the ground-truth cell of every landmark (`PIPTargets.cell`); neighbour terms at
the cell of the landmark that predicts them. Both losses reduce through the same helpers (`_masked_sum`,
`_divide`), so an all-`std` curriculum batch gives bit-for-bit the supervised loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pipnet_lit.pip.types import CurriculumTargets, PIPOutputs, PIPTargets

CLS_LOSSES = ("l2", "l1", "focal")
REG_LOSSES = ("l1", "l2")
# The official GSSL training (lib/train_gssl.py) offers these two classification criteria only.
CURRICULUM_CLS_LOSSES = ("l2", "l1")
REG_NAMES = ("offset_x", "offset_y", "nb_x", "nb_y")

# Focal loss constants (ours; the official repository has no focal variant, see `_cls_elementwise`).
FOCAL_ALPHA = 2.0
FOCAL_BETA = 4.0


class PIPLoss(NamedTuple):
    """Scalar terms: total = cls_weight * cls + reg_weight * (x + y + nb_x + nb_y); the others unweighted."""

    total: Tensor
    cls: Tensor
    x: Tensor
    y: Tensor
    nb_x: Tensor
    nb_y: Tensor


def gather_at_cells(maps: Tensor, cell: Tensor) -> Tensor:
    """Values of maps at each landmark's cell.

    Args:
        maps: (B, L * k, H, W), channel i * k + c belonging to landmark i (k = 1 for score/offsets, num_nb for
            neighbour maps).
        cell: (B, L) long flat cell index y * W + x per landmark.

    Returns:
        (B, L * k) values, channel order kept.
    """
    b, channels, h, w = maps.shape
    num_lms = cell.shape[1]
    k = channels // num_lms
    index = cell.repeat_interleave(k, dim=1)[..., None]  # (B, L*k, 1)
    return maps.reshape(b, channels, h * w).gather(2, index).squeeze(2)


def _count(n: Tensor | int, like: Tensor) -> Tensor:
    """An element count as a float32 0-dim tensor on `like`'s device (exact below 2**24)."""
    if isinstance(n, Tensor):
        return n.to(device=like.device, dtype=torch.float32)
    return torch.full((), float(n), dtype=torch.float32, device=like.device)


def _divide(total: Tensor, count: Tensor) -> Tensor:
    """total / count as a tensor-by-tensor division on one device; a zero count leaves total undivided."""
    return torch.where(count > 0, total / count.clamp(min=1), total)


def _masked_sum(elementwise: Tensor, sample_mask: Tensor | None = None) -> Tensor:
    """Sum of an elementwise loss (B, ...), with samples whose `sample_mask` (B,) is 0 multiplied out."""
    if sample_mask is None:
        return elementwise.sum()
    mask = sample_mask.to(device=elementwise.device, dtype=elementwise.dtype)
    return (elementwise * mask.view(-1, *([1] * (elementwise.ndim - 1)))).sum()


def _reduce(elementwise: Tensor, denominator: Tensor | int | None = None) -> Tensor:
    """Sum of an elementwise loss divided by `denominator` (default: its element count, i.e. the mean)."""
    if denominator is None:
        denominator = elementwise.numel()
    return _divide(_masked_sum(elementwise), _count(denominator, elementwise))


def _reg_elementwise(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="none")
    return F.mse_loss(pred, target, reduction="none")


def _cls_elementwise(score: Tensor, target: Tensor, kind: str) -> Tensor:
    """Elementwise classification loss on raw scores.

    'l2' / 'l1': squared / absolute error against the 0/1 target (official 'l2' is the paper default).
    'focal' (ours, not in the official code): the penalty-reduced focal loss of CornerNet/CenterNet on
    p = sigmoid(score): -(1 - p)^a log p at positive cells (target == 1), -(1 - y)^b p^a log(1 - p) elsewhere,
    a = FOCAL_ALPHA = 2, b = FOCAL_BETA = 4; `pip_loss` divides its sum by the number of positive cells.
    """
    if kind == "l2":
        return F.mse_loss(score, target, reduction="none")
    if kind == "l1":
        return F.l1_loss(score, target, reduction="none")
    score = score.float()
    log_p = F.logsigmoid(score)
    log_not_p = F.logsigmoid(-score)
    pos = target.eq(1).to(score.dtype)
    pos_term = -((1.0 - log_p.exp()) ** FOCAL_ALPHA) * log_p
    neg_term = -((1.0 - target) ** FOCAL_BETA) * (log_p.exp() ** FOCAL_ALPHA) * log_not_p
    return pos * pos_term + (1.0 - pos) * neg_term


def _check_names(cls_loss: str, reg_loss: str) -> None:
    if cls_loss not in CLS_LOSSES:
        raise ValueError(f"pip_loss: unknown cls_loss {cls_loss!r}; valid names: {', '.join(CLS_LOSSES)}")
    if reg_loss not in REG_LOSSES:
        raise ValueError(f"pip_loss: unknown reg_loss {reg_loss!r}; valid names: {', '.join(REG_LOSSES)}")


def _check_shapes(outputs: PIPOutputs, targets: PIPTargets, fn: str = "pip_loss") -> None:
    for name in ("score", "offset_x", "offset_y", "nb_x", "nb_y"):
        out, tgt = getattr(outputs, name), getattr(targets, name)
        if out.shape != tgt.shape:
            raise ValueError(
                f"{fn}: outputs.{name} has shape {tuple(out.shape)} but targets.{name} has "
                f"{tuple(tgt.shape)}; the head's grid / landmark count / num_nb must match the targets"
            )
    b, num_lms = outputs.score.shape[:2]
    if tuple(targets.cell.shape) != (b, num_lms):
        raise ValueError(
            f"{fn}: targets.cell must have shape {(b, num_lms)}, got {tuple(targets.cell.shape)}"
        )
    if outputs.nb_x.shape[1] % num_lms:
        raise ValueError(f"{fn}: nb channels {outputs.nb_x.shape[1]} are not a multiple of L={num_lms}")


def pip_loss(
    outputs: PIPOutputs,
    targets: PIPTargets,
    *,
    cls_loss: str = "l2",
    reg_loss: str = "l1",
    cls_weight: float = 10.0,
    reg_weight: float = 1.0,
) -> PIPLoss:
    """The PIPNet loss of one batch.

    cls: elementwise `cls_loss` over all B*L*H*W score entries, mean (for 'focal': sum / number of positive
    cells). x, y, nb_x, nb_y: `reg_loss` ('l1' default, 'l2' = squared error) between outputs and targets
    gathered at the ground-truth cell only, mean over B*L (B*L*num_nb for neighbours).

    Args:
        outputs: raw head outputs, score/offsets (B, L, H, W), neighbours (B, L*num_nb, H, W).
        targets: from `encode_targets` on the same grid.
    """
    _check_names(cls_loss, reg_loss)
    _check_shapes(outputs, targets)
    cell = targets.cell.to(outputs.score.device)

    cls_elem = _cls_elementwise(outputs.score, targets.score, cls_loss)
    cls_den = targets.score.eq(1).sum().clamp(min=1) if cls_loss == "focal" else None
    cls = _reduce(cls_elem, cls_den)

    reg_terms = []
    for name in REG_NAMES:
        pred = gather_at_cells(getattr(outputs, name), cell)
        tgt = gather_at_cells(getattr(targets, name), cell)
        reg_terms.append(_reduce(_reg_elementwise(pred, tgt, reg_loss)))
    return _combine(cls, reg_terms, cls_weight, reg_weight)


def _combine(cls: Tensor, reg_terms: list[Tensor], cls_weight: float, reg_weight: float) -> PIPLoss:
    x, y, nb_x, nb_y = reg_terms
    total = cls_weight * cls + reg_weight * (x + y + nb_x + nb_y)
    return PIPLoss(total=total, cls=cls, x=x, y=y, nb_x=nb_x, nb_y=nb_y)


def _check_curriculum(outputs: PIPOutputs, targets: CurriculumTargets, cls_loss: str, reg_loss: str) -> None:
    if cls_loss not in CURRICULUM_CLS_LOSSES:
        raise ValueError(
            f"curriculum_loss: cls_loss {cls_loss!r} is not supported; valid names: "
            f"{', '.join(CURRICULUM_CLS_LOSSES)} (the official GSSL training uses only l2 or l1)"
        )
    if reg_loss not in REG_LOSSES:
        raise ValueError(
            f"curriculum_loss: unknown reg_loss {reg_loss!r}; valid names: {', '.join(REG_LOSSES)}"
        )
    if not isinstance(targets, CurriculumTargets):
        raise ValueError(
            f"curriculum_loss: targets must be CurriculumTargets (encode_curriculum_targets), got "
            f"{type(targets).__name__}; use pip_loss for PIPTargets"
        )
    _check_shapes(outputs, targets.pip_targets(), "curriculum_loss")
    n_out, n_tgt = len(outputs.score_coarse), len(targets.score_coarse)
    if n_out != n_tgt:
        raise ValueError(
            f"curriculum_loss: outputs carry {n_out} coarse score map(s) but the targets {n_tgt}; build the "
            f"network with PIPNet(coarse_levels={n_tgt})"
        )
    for k, (out, tgt) in enumerate(zip(outputs.score_coarse, targets.score_coarse, strict=True)):
        if out.shape != tgt.shape:
            raise ValueError(
                f"curriculum_loss: outputs.score_coarse[{k}] has shape {tuple(out.shape)} but "
                f"targets.score_coarse[{k}] has {tuple(tgt.shape)}"
            )
    b = outputs.score.shape[0]
    if tuple(targets.map_mask.shape) != (b, 1 + n_tgt):
        raise ValueError(
            f"curriculum_loss: targets.map_mask must have shape {(b, 1 + n_tgt)}, got "
            f"{tuple(targets.map_mask.shape)}"
        )


def curriculum_loss(
    outputs: PIPOutputs,
    targets: CurriculumTargets,
    *,
    cls_loss: str = "l2",
    reg_loss: str = "l1",
    cls_weight: float = 10.0,
    reg_weight: float = 1.0,
) -> PIPLoss:
    """The curriculum self-training loss of one batch (official GSSL normalization).

    cls: the elementwise `cls_loss` ('l2' squared / 'l1' absolute error) summed over every cell of every
    score map a sample supervises (its task's map: the full grid for "std", the 2x-coarser map for "cls2",
    the 4x-coarser one for "cls3"; negatives included), over the three maps together, divided by the number
    of those cells (one shared count, so a sample weighs by its map's size: H*W, H*W/4, H*W/16 cells per
    landmark). x, y, nb_x, nb_y: `reg_loss` at the full-grid target cell summed over the "std" samples only,
    divided by their element count (n_std * L, n_std * L * num_nb); with no "std" sample the sums (zero)
    stay undivided. total = cls_weight * cls + reg_weight * (x + y + nb_x + nb_y).

    An all-"std" batch gives exactly `pip_loss(outputs, targets.pip_targets())`; outputs of unsupervised
    maps get exactly zero gradient (the official code multiplies outputs and targets by the masks).

    The official lib/train_gssl.py builds 'l2' cls and 'l1' reg with reduction='sum', so its configs
    (l2/l1) compute exactly this; its 'l1' cls and 'l2' reg criteria keep the mean reduction and are then
    divided by the count again (a double normalization). Here every combination is sum / count.

    Args:
        outputs: from `PIPNet(coarse_levels=2)`: full-grid maps plus `score_coarse` (2 maps).
        targets: from `encode_curriculum_targets` on the same full grid.
    """
    _check_curriculum(outputs, targets, cls_loss, reg_loss)
    device = outputs.score.device
    map_mask = targets.map_mask.to(device)
    num_lms = outputs.score.shape[1]

    scores = (outputs.score, *outputs.score_coarse)
    labels = (targets.score, *targets.score_coarse)
    cls_sum = None
    cls_count = torch.zeros((), dtype=torch.long, device=device)
    for k, (out, tgt) in enumerate(zip(scores, labels, strict=True)):
        part = _masked_sum(_cls_elementwise(out, tgt.to(device), cls_loss), map_mask[:, k])
        cls_sum = part if cls_sum is None else cls_sum + part
        cls_count = cls_count + map_mask[:, k].sum() * (num_lms * out.shape[2] * out.shape[3])
    cls = _divide(cls_sum, _count(cls_count, cls_sum))

    reg_mask = map_mask[:, 0]
    n_std = reg_mask.sum()
    cell = targets.cell.to(device)
    reg_terms = []
    for name in REG_NAMES:
        pred = gather_at_cells(getattr(outputs, name), cell)  # (B, L * k)
        tgt = gather_at_cells(getattr(targets, name).to(device), cell)
        elem = _reg_elementwise(pred, tgt, reg_loss)
        reg_terms.append(_divide(_masked_sum(elem, reg_mask), _count(n_std * elem.shape[1], elem)))
    return _combine(cls, reg_terms, cls_weight, reg_weight)
