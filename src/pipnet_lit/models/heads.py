"""The PIP head: 1x1 convs from the final feature map to score, offset and neighbour maps, and their init.

The official network keeps the head convs as top-level attributes (`cls_layer`, `x_layer`, `y_layer`,
`nb_x_layer`, `nb_y_layer`), so these helpers build plain convs for the caller to register under those
names rather than a wrapping module (which would prefix every state_dict key).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pipnet_lit.pip.types import PIPOutputs

# Official attribute names, in the order of the official forward's outputs (= PIPOutputs' fields).
HEAD_LAYER_NAMES: tuple[str, str, str, str, str] = (
    "cls_layer",
    "x_layer",
    "y_layer",
    "nb_x_layer",
    "nb_y_layer",
)

INIT_STD = 0.001


def init_pip_conv_(conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
    """Official init of every layer PIPNet adds on top of the trunk: weight N(0, 0.001), bias 0 (in place)."""
    nn.init.normal_(conv.weight, std=INIT_STD)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_bn_(bn: nn.BatchNorm2d) -> None:
    """BatchNorm init of the added layers: weight 1, bias 0 (in place)."""
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)


def pip_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """One head layer: a 1x1 conv (with bias, no activation), initialized as in the official code.

    Also the building block for extra score heads (`pip_conv(C, num_landmarks)`).
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
    init_pip_conv_(conv)
    return conv


def build_pip_head(in_channels: int, num_landmarks: int, num_nb: int) -> dict[str, nn.Conv2d]:
    """The five head convs keyed by their official names, in `HEAD_LAYER_NAMES` order.

    cls/x/y: C -> L channels; nb_x/nb_y: C -> L * num_nb channels (landmark-major: i * num_nb + j).
    """
    if in_channels < 1 or num_landmarks < 1 or num_nb < 1:
        raise ValueError(
            f"PIP head needs positive in_channels, num_landmarks and num_nb; got {in_channels}, "
            f"{num_landmarks}, {num_nb}."
        )
    widths = (num_landmarks,) * 3 + (num_landmarks * num_nb,) * 2
    return {name: pip_conv(in_channels, width) for name, width in zip(HEAD_LAYER_NAMES, widths, strict=True)}


def coarse_scores(features: Tensor, cls_layer: nn.Module, levels: int) -> tuple[Tensor, ...]:
    """The same `cls_layer` on the features max-pooled 2x2 (stride 2) once, twice, ... `levels` times.

    As the official GSSL network (lib/networks_gssl.py): the features are pooled, not the scores. Returns
    `levels` maps (B, L, H/2, W/2), (B, L, H/4, W/4), ...
    """
    maps = []
    for _ in range(levels):
        features = F.max_pool2d(features, kernel_size=2, stride=2)
        maps.append(cls_layer(features))
    return tuple(maps)


def apply_pip_head(
    features: Tensor,
    cls_layer: nn.Module,
    x_layer: nn.Module,
    y_layer: nn.Module,
    nb_x_layer: nn.Module,
    nb_y_layer: nn.Module,
    coarse_levels: int = 0,
) -> PIPOutputs:
    """Run the head on `features` (B, C, H, W) -> PIPOutputs: (B, L, H, W) x3 and (B, L*num_nb, H, W) x2,
    plus `coarse_levels` coarser score maps (`coarse_scores`) in `score_coarse`."""
    return PIPOutputs(
        cls_layer(features),
        x_layer(features),
        y_layer(features),
        nb_x_layer(features),
        nb_y_layer(features),
        coarse_scores(features, cls_layer, coarse_levels),
    )
