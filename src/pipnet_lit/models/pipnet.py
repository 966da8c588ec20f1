"""PIPNet: a torchvision trunk, optional stride-changing layers, and the PIP head, in one nn.Module.

Parameter names match the official `lib/networks.py` classes of the same backbone and stride, so their
state_dicts load with `strict=True` (ResNets, MobileNetV2; see `backbones.py` for MobileNetV3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipnet_lit.models.backbones import EXTRA_CHANNELS, build_stride_layers, build_trunk, get_backbone_spec
from pipnet_lit.models.heads import HEAD_LAYER_NAMES, apply_pip_head, build_pip_head
from pipnet_lit.pip.types import PIPOutputs

# Coarse score maps the network may add (0 = the supervised PIPNet, 2 = the official GSSL network).
COARSE_LEVELS = (0, 1, 2)

#: The settings that define a network (its architecture; not its weights): what a checkpoint records and
#: `PIPNet.from_settings` builds from. Everything that builds a network from settings goes through it.
NETWORK_SETTINGS = ("backbone", "num_landmarks", "num_nb", "net_stride", "input_size", "coarse_levels")


class PIPNet(nn.Module):
    """Pixel-in-Pixel Net.

    Args:
        backbone: "resnet18", "resnet50", "resnet101", "mobilenet_v2" or "mobilenet_v3" (MobileNetV3-large).
        num_landmarks: L, landmarks per face.
        num_nb: neighbours per landmark predicted by the nb heads.
        net_stride: input pixels per grid cell: resnet18 16/32/64/128, resnet50/101 32/64/128, MobileNets 32.
        pretrained: load torchvision ImageNet weights into the trunk (from the torch hub cache, downloading
            if needed; RuntimeError naming the expected file when offline).
        input_size: side of the square input crop used for training (kept for `grid_size()`).
        coarse_levels: 0 (supervised PIPNet) or 1 or 2 (2 = the official curriculum self-training network,
            lib/networks_gssl.py): the same `cls_layer` also scores the final features max-pooled 2x2 once
            (and twice). No parameters are added, so state dicts load either way with strict=True. The grid
            must be divisible by 2**coarse_levels.

    forward(x (B, 3, H, W), ImageNet-normalized RGB) -> PIPOutputs with score/offset_x/offset_y
    (B, L, H/s, W/s) and nb_x/nb_y (B, L*num_nb, H/s, W/s), raw (no activation); score_coarse holds the
    `coarse_levels` maps (B, L, H/2s, W/2s), (B, L, H/4s, W/4s) (empty when 0).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_landmarks: int = 68,
        num_nb: int = 10,
        net_stride: int = 32,
        pretrained: bool = False,
        input_size: int = 256,
        coarse_levels: int = 0,
    ) -> None:
        super().__init__()
        spec = get_backbone_spec(backbone, net_stride)
        if num_landmarks < 1 or num_nb < 1:
            raise ValueError(f"num_landmarks and num_nb must be >= 1, got {num_landmarks} and {num_nb}.")
        if input_size < net_stride or input_size % net_stride:
            raise ValueError(
                f"input_size={input_size} must be a positive multiple of net_stride={net_stride} "
                "(the head's grid is input_size / net_stride cells)."
            )
        if isinstance(coarse_levels, bool) or coarse_levels not in COARSE_LEVELS:
            raise ValueError(
                f"coarse_levels must be one of {COARSE_LEVELS} (0: supervised; 2: the curriculum "
                f"self-training network), got {coarse_levels!r}."
            )
        grid = input_size // net_stride
        if grid % (2**coarse_levels):
            raise ValueError(
                f"coarse_levels={coarse_levels} max-pools the {grid}x{grid} grid (input_size={input_size} / "
                f"net_stride={net_stride}) 2x2 {coarse_levels} time(s): the grid must be divisible by "
                f"{2**coarse_levels}."
            )
        self.coarse_levels = coarse_levels
        self.backbone_name = backbone
        self.num_landmarks = num_landmarks
        self.num_nb = num_nb
        self.net_stride = net_stride
        self.input_size = input_size

        trunk = build_trunk(backbone, pretrained=pretrained)
        stride_layers = build_stride_layers(spec.channels, net_stride)
        for name, module in {**trunk, **stride_layers}.items():
            self.add_module(name, module)
        self._trunk_names: tuple[str, ...] = tuple(trunk)
        names = tuple(stride_layers)
        # (conv, bn) pairs, each applied as relu(bn(conv(x))).
        self._stride_pairs: tuple[tuple[str, str], ...] = tuple(zip(names[0::2], names[1::2], strict=True))

        self.feature_channels = EXTRA_CHANNELS if stride_layers else spec.channels
        for name, conv in build_pip_head(self.feature_channels, num_landmarks, num_nb).items():
            self.add_module(name, conv)

    def grid_size(self, input_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """Head grid (h, w) for an input of `input_size` (side, or (H, W); default the configured size)."""
        if input_size is None:
            input_size = self.input_size
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        if height % self.net_stride or width % self.net_stride or height < 1 or width < 1:
            raise ValueError(
                f"Input size {(height, width)} is not a positive multiple of net_stride={self.net_stride}."
            )
        return height // self.net_stride, width // self.net_stride

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, pretrained: bool = False) -> PIPNet:
        """The network of ``settings`` (a mapping holding `NETWORK_SETTINGS`; other keys are ignored, and a
        missing ``coarse_levels`` means 0). The one place a network is built from recorded settings."""
        missing = [k for k in NETWORK_SETTINGS if k != "coarse_levels" and k not in settings]
        if missing:
            raise ValueError(f"network settings lack {missing} (need {list(NETWORK_SETTINGS)})")
        return cls(
            backbone=str(settings["backbone"]),
            num_landmarks=int(settings["num_landmarks"]),
            num_nb=int(settings["num_nb"]),
            net_stride=int(settings["net_stride"]),
            pretrained=pretrained,
            input_size=int(settings["input_size"]),
            coarse_levels=int(settings.get("coarse_levels") or 0),
        )

    def settings(self) -> dict[str, Any]:
        """This network's `NETWORK_SETTINGS` as plain Python values (``from_settings`` rebuilds it)."""
        return {
            "backbone": self.backbone_name,
            "num_landmarks": int(self.num_landmarks),
            "num_nb": int(self.num_nb),
            "net_stride": int(self.net_stride),
            "input_size": int(self.input_size),
            "coarse_levels": int(self.coarse_levels),
        }

    def forward_features(self, x: Tensor) -> Tensor:
        """Trunk and stride layers: (B, 3, H, W) -> (B, feature_channels, H/s, W/s)."""
        if not torch.jit.is_tracing() and (x.ndim != 4 or x.shape[1] != 3):
            raise ValueError(f"PIPNet expects images of shape (B, 3, H, W), got {tuple(x.shape)}.")
        for name in self._trunk_names:
            x = self._modules[name](x)
        for conv_name, bn_name in self._stride_pairs:
            x = F.relu(self._modules[bn_name](self._modules[conv_name](x)))
        return x

    def forward_head(self, features: Tensor) -> PIPOutputs:
        """PIP head on a feature map (B, C, h, w) -> PIPOutputs on the same (h, w) grid (+ coarse scores)."""
        factor = 2**self.coarse_levels
        if not torch.jit.is_tracing() and (features.shape[-2] % factor or features.shape[-1] % factor):
            raise ValueError(
                f"coarse_levels={self.coarse_levels} needs a feature grid divisible by {factor}, got "
                f"{tuple(features.shape[-2:])}: use an input size that is a multiple of "
                f"{factor * self.net_stride}."
            )
        head = (self._modules[name] for name in HEAD_LAYER_NAMES)
        return apply_pip_head(features, *head, coarse_levels=self.coarse_levels)

    def forward(self, x: Tensor) -> PIPOutputs:
        """(B, 3, H, W) ImageNet-normalized RGB -> PIPOutputs on the (H/s, W/s) grid."""
        return self.forward_head(self.forward_features(x))

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, num_landmarks={self.num_landmarks}, num_nb={self.num_nb}, "
            f"net_stride={self.net_stride}, input_size={self.input_size}, coarse_levels={self.coarse_levels}"
        )
