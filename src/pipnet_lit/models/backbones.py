"""Backbones of PIPNet: torchvision trunks, their ImageNet weights, and the stride-changing extra layers.

Layer names follow the official `lib/networks.py` (Pip_resnet18/50/101, Pip_mbnetv2, Pip_mbnetv3) so that
their state_dicts keep the same keys: ResNet trunks are split into top-level `conv1`, `bn1`, `maxpool`,
`layer1`..`layer4`; MobileNets keep torchvision's `features`.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

from pipnet_lit.models.heads import init_bn_, init_pip_conv_

# Input normalization of every ImageNet-pretrained backbone (RGB, after scaling pixels to [0, 1]).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """One supported backbone.

    builder: torchvision constructor (called with `weights=None`); weights: the ImageNet weights that match
    the official `pretrained=True`; channels: channels of the trunk's last map (stride 32); strides: the
    net strides the official code builds for this backbone; trunk: top-level module names, in forward order.
    """

    builder: Callable[..., nn.Module]
    weights: WeightsEnum
    channels: int
    strides: tuple[int, ...]
    trunk: tuple[str, ...]


_RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(
        models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, 512, (16, 32, 64, 128), _RESNET_TRUNK
    ),
    "resnet50": BackboneSpec(
        models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1, 2048, (32, 64, 128), _RESNET_TRUNK
    ),
    "resnet101": BackboneSpec(
        models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1, 2048, (32, 64, 128), _RESNET_TRUNK
    ),
    "mobilenet_v2": BackboneSpec(
        models.mobilenet_v2, models.MobileNet_V2_Weights.IMAGENET1K_V1, 1280, (32,), ("features",)
    ),
    # MobileNetV3-large: torchvision's `features` already ends with the 1x1 conv to 960 channels.
    "mobilenet_v3": BackboneSpec(
        models.mobilenet_v3_large, models.MobileNet_V3_Large_Weights.IMAGENET1K_V1, 960, (32,), ("features",)
    ),
}

# Channels of the extra stride-2 convs (`layer5`, `layer6`) and of the stride-16 deconv.
EXTRA_CHANNELS = 512


def supported_combinations() -> str:
    """Human-readable list of valid (backbone, net_stride) pairs, for error messages."""
    return "; ".join(f"{name}: {list(spec.strides)}" for name, spec in BACKBONES.items())


def get_backbone_spec(backbone: str, net_stride: int) -> BackboneSpec:
    """Spec of `backbone`; ValueError naming the valid pairs if it or `net_stride` is unsupported."""
    if backbone not in BACKBONES:
        raise ValueError(
            f"Unknown backbone {backbone!r}. Valid backbones and net strides: {supported_combinations()}."
        )
    spec = BACKBONES[backbone]
    if net_stride not in spec.strides:
        raise ValueError(
            f"net_stride={net_stride!r} is not supported for backbone {backbone!r} (supported: "
            f"{list(spec.strides)}). Valid backbones and net strides: {supported_combinations()}."
        )
    return spec


def imagenet_weights_path(backbone: str) -> Path:
    """Cache file of the ImageNet weights of `backbone`: `<torch hub dir>/checkpoints/<file>`."""
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; valid: {sorted(BACKBONES)}.")
    filename = os.path.basename(BACKBONES[backbone].weights.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_imagenet_state_dict(backbone: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """ImageNet state_dict of the full torchvision model `backbone`, from the hub cache or downloaded into it.

    Raises RuntimeError naming the expected cache file when it is absent and cannot be downloaded.
    """
    spec = BACKBONES[backbone]
    path = imagenet_weights_path(backbone)
    if not path.is_file():
        hash_match = torch.hub.HASH_REGEX.search(path.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(
                spec.weights.url,
                str(path),
                hash_prefix=hash_match.group(1) if hash_match else None,
                progress=progress,
            )
        except (OSError, http.client.HTTPException, RuntimeError) as err:
            raise RuntimeError(
                f"pretrained=True needs the ImageNet weights of {backbone!r} (torchvision {spec.weights}), "
                f"but {path} does not exist and downloading {spec.weights.url} failed "
                f"({type(err).__name__}: {err}). On a machine with internet run\n"
                f'  python -c "import torchvision; torchvision.models.{spec.builder.__name__}'
                f"(weights='{spec.weights.name}')\"\n"
                f"(or download the URL above) and copy {path.name} to {path.parent}/ here "
                "(TORCH_HOME moves the cache: <TORCH_HOME>/hub/checkpoints/), or build with pretrained=False."
            ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(
            f"Could not read the ImageNet weights file {path} ({type(err).__name__}: {err}). It may be "
            "truncated or not a torch state_dict: delete it and fetch it again."
        ) from err


def build_trunk(backbone: str, pretrained: bool = False) -> dict[str, nn.Module]:
    """The trunk of `backbone` as {top-level name: module} in forward order; output stride 32.

    With `pretrained`, the torchvision ImageNet weights are loaded first (strictly, into the full model);
    otherwise torchvision's own init is kept.
    """
    spec = BACKBONES[backbone]
    net = spec.builder(weights=None)
    if pretrained:
        net.load_state_dict(load_imagenet_state_dict(backbone))
    return {name: getattr(net, name) for name in spec.trunk}


def build_stride_layers(in_channels: int, net_stride: int) -> dict[str, nn.Module]:
    """Extra layers that move the trunk's stride 32 to `net_stride`, as {name: module} in forward order.

    Each conv/deconv is followed by its BatchNorm (applied with a ReLU by the network). Stride 64: `layer5`
    Conv2d(C, 512, 3, s2, p1) + `bn5`; 128: also `layer6` Conv2d(512, 512, 3, s2, p1) + `bn6`; 16:
    `deconv1` ConvTranspose2d(C, 512, 4, s2, p1, bias=False) + `bn_deconv1`. Conv weights N(0, 0.001),
    biases 0, BN weight 1 / bias 0, as in the official code.
    """
    if net_stride == 32:
        return {}
    if net_stride == 16:
        layers: dict[str, nn.Module] = {
            "deconv1": nn.ConvTranspose2d(in_channels, EXTRA_CHANNELS, 4, stride=2, padding=1, bias=False),
            "bn_deconv1": nn.BatchNorm2d(EXTRA_CHANNELS),
        }
    elif net_stride in (64, 128):
        layers = {
            "layer5": nn.Conv2d(in_channels, EXTRA_CHANNELS, 3, stride=2, padding=1),
            "bn5": nn.BatchNorm2d(EXTRA_CHANNELS),
        }
        if net_stride == 128:
            layers["layer6"] = nn.Conv2d(EXTRA_CHANNELS, EXTRA_CHANNELS, 3, stride=2, padding=1)
            layers["bn6"] = nn.BatchNorm2d(EXTRA_CHANNELS)
    else:
        raise ValueError(f"net_stride must be one of 16, 32, 64, 128, got {net_stride!r}.")
    for module in layers.values():
        if isinstance(module, nn.BatchNorm2d):
            init_bn_(module)
        else:
            init_pip_conv_(module)
    return layers
