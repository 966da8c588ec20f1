"""PIP training loss (official lib/functions.py compute_loss_pip, weights as in lib/train.py).

Each term is an elementwise loss reduced over its elements. Regression terms look only at the ground-truth
cell of every landmark (`PIPTargets.cell`); neighbour terms at the cell of the landmark that predicts them.
The gather and the reduction are separate helpers so a per-element mask (sum over supervised elements / their
count) can be added without touching the rest.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

from pipnet_lit.pip.types import PIPOutputs, PIPTargets

CLS_LOSSES = ("l2", "l1", "focal")
REG_LOSSES = ("l1", "l2")

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


def _reduce(elementwise: Tensor, denominator: Tensor | float | None = None) -> Tensor:
    """Sum of an elementwise loss divided by `denominator` (default: its element count, i.e. the mean)."""
    if denominator is None:
        return elementwise.mean()
    return elementwise.sum() / denominator


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


def _check_shapes(outputs: PIPOutputs, targets: PIPTargets) -> None:
    for name in ("score", "offset_x", "offset_y", "nb_x", "nb_y"):
        out, tgt = getattr(outputs, name), getattr(targets, name)
        if out.shape != tgt.shape:
            raise ValueError(
                f"pip_loss: outputs.{name} has shape {tuple(out.shape)} but targets.{name} has "
                f"{tuple(tgt.shape)}; the head's grid / landmark count / num_nb must match the targets"
            )
    b, num_lms = outputs.score.shape[:2]
    if tuple(targets.cell.shape) != (b, num_lms):
        raise ValueError(
            f"pip_loss: targets.cell must have shape {(b, num_lms)}, got {tuple(targets.cell.shape)}"
        )
    if outputs.nb_x.shape[1] % num_lms:
        raise ValueError(f"pip_loss: nb channels {outputs.nb_x.shape[1]} are not a multiple of L={num_lms}")


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
    for name in ("offset_x", "offset_y", "nb_x", "nb_y"):
        pred = gather_at_cells(getattr(outputs, name), cell)
        tgt = gather_at_cells(getattr(targets, name), cell)
        reg_terms.append(_reduce(_reg_elementwise(pred, tgt, reg_loss)))
    x, y, nb_x, nb_y = reg_terms

    total = cls_weight * cls + reg_weight * (x + y + nb_x + nb_y)
    return PIPLoss(total=total, cls=cls, x=x, y=y, nb_x=nb_x, nb_y=nb_y)
