"""PIPNet networks: torchvision backbones with the PIP head, as plain torch.nn modules."""

from pipnet_lit.models.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_weights_path,
    load_imagenet_state_dict,
    supported_combinations,
)
from pipnet_lit.models.heads import HEAD_LAYER_NAMES, build_pip_head, pip_conv
from pipnet_lit.models.pipnet import COARSE_LEVELS, NETWORK_SETTINGS, PIPNet

__all__ = [
    "BACKBONES",
    "COARSE_LEVELS",
    "HEAD_LAYER_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NETWORK_SETTINGS",
    "PIPNet",
    "build_pip_head",
    "imagenet_weights_path",
    "load_imagenet_state_dict",
    "pip_conv",
    "supported_combinations",
]
