"""Official PIPNet weights -> a pipnet-lit checkpoint: ``python -m pipnet_lit.convert``.

    python -m pipnet_lit.convert official=snapshots/data_300W/pip_32_16_60_r18_l2_l1_10_1_nb10/epoch59.pth \\
        meanface=data/data_300W/meanface.txt data=300w out=pip_r18_300w.ckpt
    python -m pipnet_lit.eval ckpt_path=pip_r18_300w.ckpt data=300w data.root=/data   # the paper's numbers

``official`` is a state dict saved by the official code (read with ``torch.load(weights_only=True)``),
``meanface`` the official ``meanface.txt`` of the same dataset, ``data`` our dataset (a built-in dataset
name, the same as the data config names: 300w, wflw, cofw, aflw, ...; or the path of a dataset YAML), whose
landmark count the weights must have. The backbone, net stride and num_nb are read from the weights; give
``backbone=``, ``net_stride=``, ``num_nb=`` to have them checked (a mismatch names what differs).
``input_size`` is 256 in every official experiment. The checkpoint loads with `Predictor.from_checkpoint`,
``pipnet_lit.eval`` and ``pipnet_lit.predict`` like one of ours.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from pipnet_lit.checkpoints import load_state_strict, torch_load, write_checkpoint
from pipnet_lit.cli import Command, HelpRequested, UsageError, option
from pipnet_lit.files import file_sha256
from pipnet_lit.landmark_graph import LandmarkGraph
from pipnet_lit.models import BACKBONES, PIPNet

__all__ = [
    "ConvertConfig",
    "convert",
    "describe_official_weights",
    "load_official_weights",
    "main",
    "official_graph",
    "read_official_meanface",
]


@dataclass
class ConvertConfig:
    """Options of ``python -m pipnet_lit.convert`` (see the module docstring)."""

    official: str = option(help="the state dict saved by the official code (epoch59.pth)")
    meanface: str = option(help="the official meanface.txt of the same dataset")
    data: str = option(help="our dataset: 300w, wflw, cofw, aflw, ... or a dataset YAML")
    out: str = option(help="the checkpoint to write")
    backbone: str | None = option(None, help="check the weights' backbone (read from the weights otherwise)")
    net_stride: int | None = option(None, help="check the weights' stride")
    num_nb: int | None = option(None, help="check the weights' neighbour count")
    input_size: int = option(256, help="crop side in pixels (256 in every official experiment)")


COMMAND = Command(ConvertConfig, prog="python -m pipnet_lit.convert", doc=__doc__, style="key=value")


# -- the official code's files -------------------------------------------------------------------------


def official_graph(
    weights: str | Path | dict[str, Tensor],
    meanface: str | Path | np.ndarray,
    *,
    backbone: str,
    num_landmarks: int,
    num_nb: int,
    net_stride: int,
    input_size: int,
    merge: bool = True,
    name: str | None = None,
) -> LandmarkGraph:
    """The inference core of weights saved by the official code (``torch.save(net.state_dict(), ...)``).

    ``weights``: the file (read with ``torch.load(weights_only=True)``) or its state dict; ``meanface``:
    the official ``meanface.txt`` (one line of 2L numbers x1 y1 x2 y2 ...) or an (L, 2) array. The settings
    are those of the official experiment file (``pip_32_16_60_r18_l2_l1_10_1_nb10.py``: resnet18, stride 32,
    num_nb 10, input 256). Settings that contradict the weights (backbone, landmark count, num_nb, stride)
    or a mean face of another length raise a ValueError naming each difference (``name`` names a state
    dict passed in memory in those messages). Returned in eval mode, on the CPU.
    """
    source = str(weights) if isinstance(weights, (str, Path)) else (name or "the official state dict")
    state = (
        load_official_weights(weights) if isinstance(weights, (str, Path)) else _check_state(weights, source)
    )
    given = {
        "backbone": backbone,
        "num_landmarks": int(num_landmarks),
        "num_nb": int(num_nb),
        "net_stride": int(net_stride),
    }
    found = describe_official_weights(state)
    diffs = [
        f"{key}={given[key]!r} but the weights are {key}={found[key]!r}"
        for key in given
        if found.get(key) is not None and found[key] != given[key]
    ]
    if diffs:
        raise ValueError(f"{source} does not match the settings: " + "; ".join(diffs))
    mf = read_official_meanface(meanface) if isinstance(meanface, (str, Path)) else np.asarray(meanface)
    if mf.ndim != 2 or mf.shape != (int(num_landmarks), 2):
        where = meanface if isinstance(meanface, (str, Path)) else "the mean face"
        raise ValueError(
            f"{where} has {mf.shape[0] if mf.ndim == 2 else mf.size} points but num_landmarks="
            f"{int(num_landmarks)}: use the meanface.txt of the dataset the weights were trained on"
        )
    net = PIPNet.from_settings({**given, "input_size": int(input_size)}, pretrained=False)
    load_state_strict(net, state, source)
    return LandmarkGraph(net.eval(), mf, merge=merge).eval()


def read_official_meanface(path: str | Path) -> np.ndarray:
    """The official ``meanface.txt``: first line, 2L numbers ``x1 y1 x2 y2 ...`` -> (L, 2) float64."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"mean face file {path} does not exist (the official data/<dataset>/meanface.txt)"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        values = [float(v) for v in lines[0].split()] if lines else []
    except ValueError as err:
        raise ValueError(f"{path}:1: the mean face must be numbers separated by spaces ({err})") from None
    if not values or len(values) % 2:
        raise ValueError(f"{path}:1: expected 2L numbers x1 y1 x2 y2 ..., got {len(values)}")
    mf = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(mf).all():
        raise ValueError(f"{path}:1: the mean face holds NaN or inf")
    return mf


def load_official_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict of an official ``epoch*.pth`` (``torch.load(weights_only=True)``, zip checksums
    verified, ``module.`` prefixes of ``nn.DataParallel`` removed); clear errors for a missing, cut short,
    damaged or non-torch file, our checkpoint, and a torch file of something else."""
    path = Path(path)
    return _check_state(torch_load(path, "official weights", verify=True), str(path))


def _check_state(state: Any, source: str) -> dict[str, Tensor]:
    if isinstance(state, dict) and "state_dict" in state and "hyper_parameters" in state:
        raise ValueError(
            f"{source} is a pipnet-lit checkpoint, not official weights: load it with read_checkpoint / "
            "Predictor.from_checkpoint"
        )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        raise ValueError(
            f"{source} is a training checkpoint (a dict with 'state_dict'), not the official code's weights "
            "(a bare state dict saved with torch.save(net.state_dict(), ...))"
        )
    if not isinstance(state, dict) or not state:
        held = "an empty dict" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ValueError(
            f"{source} is not a state dict of tensors (the official epoch*.pth files are); it holds {held}"
        )
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(
            f"{source} is not a state dict of tensors (the official epoch*.pth files are); entries that are "
            f"not tensors: {', '.join(bad[:5])}{more}"
        )
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    if "cls_layer.weight" not in state or "nb_x_layer.weight" not in state:
        raise ValueError(
            f"{source} is a state dict, but not of a PIPNet (no cls_layer.weight / nb_x_layer.weight; it has "
            f"{sorted(state)[:5]}...)"
        )
    return state


def describe_official_weights(state: dict[str, Tensor]) -> dict[str, Any]:
    """What an official state dict was built with: backbone, num_landmarks, num_nb, net_stride.

    Read from the key names and head shapes (the official class names equal ours); a value that cannot be
    told is None. ResNets: bottleneck blocks (``layer1.0.conv3``) and the block count of ``layer3`` (6:
    resnet50, 23: resnet101); MobileNets: the head's input channels (1280: v2, 960: v3).
    """
    out: dict[str, Any] = dict.fromkeys(("backbone", "num_landmarks", "num_nb", "net_stride"))
    cls_w, nb_w = state.get("cls_layer.weight"), state.get("nb_x_layer.weight")
    if cls_w is not None:
        out["num_landmarks"] = int(cls_w.shape[0])
        if nb_w is not None and nb_w.shape[0] % cls_w.shape[0] == 0:
            out["num_nb"] = int(nb_w.shape[0] // cls_w.shape[0])
    if "deconv1.weight" in state:
        out["net_stride"] = 16
    elif "layer6.weight" in state:
        out["net_stride"] = 128
    elif "layer5.weight" in state:
        out["net_stride"] = 64
    elif cls_w is not None:
        out["net_stride"] = 32
    if any(k.startswith("features.") for k in state):
        by_channels = {BACKBONES[name].channels: name for name in ("mobilenet_v2", "mobilenet_v3")}
        out["backbone"] = by_channels.get(int(cls_w.shape[1])) if cls_w is not None else None
    elif "conv1.weight" in state:
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("layer3.")}
        if "layer1.0.conv3.weight" not in state:
            out["backbone"] = "resnet18" if len(blocks) == 2 else None
        else:
            out["backbone"] = {6: "resnet50", 23: "resnet101"}.get(len(blocks))
    return out


def convert(
    official: str | Path,
    meanface: str | Path,
    data: str,
    out: str | Path,
    *,
    backbone: str | None = None,
    net_stride: int | None = None,
    num_nb: int | None = None,
    input_size: int = 256,
) -> Path:
    """Write ``out``: the official weights with their mean face, as a checkpoint for dataset ``data``."""
    from pipnet_lit.datasets.meta import load_dataset_meta

    meta = load_dataset_meta(str(data))
    num_landmarks = meta.landmarks.num_landmarks
    state = load_official_weights(official)
    found = describe_official_weights(state)
    if found["num_landmarks"] is not None and found["num_landmarks"] != num_landmarks:
        raise ValueError(
            f"{official} predicts {found['num_landmarks']} landmarks but data={data} ({meta.name}) has "
            f"{num_landmarks}: pick the dataset the weights were trained on"
        )
    settings = {"backbone": backbone, "net_stride": net_stride, "num_nb": num_nb}
    for key, value in settings.items():
        if value is None:
            if found[key] is None:
                raise ValueError(f"cannot tell {key} from the weights in {official}: pass {key}=...")
            settings[key] = found[key]
    graph = official_graph(
        state,
        meanface,
        backbone=str(settings["backbone"]),
        num_landmarks=num_landmarks,
        num_nb=int(settings["num_nb"]),
        net_stride=int(settings["net_stride"]),
        input_size=int(input_size),
        name=str(official),
    )
    return write_checkpoint(
        graph,
        out,
        dataset=meta.name,
        converted_from=Path(official).name,
        official_sha256=file_sha256(Path(official)),
        meanface_file=Path(meanface).name,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 written, 1 bad input, 2 bad options)."""
    try:
        cfg = COMMAND.parse(list(sys.argv[1:] if argv is None else argv))
    except HelpRequested as done:
        print(done.text, end="")
        return 0
    except UsageError as err:
        print(f"{COMMAND.prog}: error: {err.message}\n{err.usage}", file=sys.stderr)
        return 2
    try:
        path = convert(
            cfg.official,
            cfg.meanface,
            cfg.data,
            cfg.out,
            backbone=cfg.backbone,
            net_stride=cfg.net_stride,
            num_nb=cfg.num_nb,
            input_size=cfg.input_size,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} (evaluate it: python -m pipnet_lit.eval ckpt_path={path} data={cfg.data})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
