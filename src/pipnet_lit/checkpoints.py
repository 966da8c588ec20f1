"""Reading and writing trained models: one checkpoint reader for every consumer (no Lightning).

A pipnet-lit checkpoint is Lightning's layout: ``state_dict`` (the network under ``net.*`` and, in
``_extra_state``, the float64 mean face that fixes the neighbour tables), ``hyper_parameters`` (the network
settings, `pipnet_lit.models.NETWORK_SETTINGS`, plus training settings) and, for files written by
`write_checkpoint` (``pipnet_lit.convert``, ``Predictor.save``), a ``pipnet_lit`` provenance entry.

`read_checkpoint` is how evaluation, the self-training chain, ``predict``, ``export`` and the runtimes load a
trained model; Lightning reads checkpoints only to resume training (``ckpt_path=last``).

    ckpt = read_checkpoint("model.ckpt")     # settings, weights, mean face; clear errors otherwise
    graph = ckpt.graph()                     # network + neighbour tables + decode (LandmarkGraph)
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipnet_lit.files import atomic_write
from pipnet_lit.landmark_graph import LandmarkGraph
from pipnet_lit.models import NETWORK_SETTINGS, PIPNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainedCheckpoint",
    "load_state_strict",
    "read_checkpoint",
    "torch_load",
    "write_checkpoint",
]

#: Version tag of the ``pipnet_lit`` entry that `write_checkpoint` adds.
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainedCheckpoint:
    """A trained model as a checkpoint holds it.

    path: the file read.
    hparams: the saved hyper-parameters: the network settings and whatever else the writer recorded
        (a training checkpoint: every `PIPNetModule` argument).
    state_dict: the saved state dict: ``net.*`` weights and ``_extra_state`` (the mean face).
    meanface: (L, 2) float64 mean face in crop fractions.
    info: the ``pipnet_lit`` provenance entry ({} for training checkpoints).
    """

    path: Path
    hparams: dict[str, Any]
    state_dict: dict[str, Any]
    meanface: Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """The network settings (`NETWORK_SETTINGS`; ``coarse_levels`` 0 when not recorded)."""
        return {
            k: self.hparams.get(k, 0) if k == "coarse_levels" else self.hparams[k] for k in NETWORK_SETTINGS
        }

    @property
    def num_landmarks(self) -> int:
        return int(self.hparams["num_landmarks"])

    @property
    def merge(self) -> bool:
        """The recorded decode setting (the paper's neighbour-vote merge unless trained with merge=false)."""
        return bool(self.hparams.get("merge", True))

    def network_state(self) -> dict[str, Tensor]:
        """The network's weights (the ``net.*`` entries, prefix removed)."""
        return {k[4:]: v for k, v in self.state_dict.items() if k.startswith("net.")}

    def network(self) -> PIPNet:
        """The network with its trained weights (strict), in eval mode, on the CPU; no ImageNet download."""
        net = PIPNet.from_settings(self.hparams, pretrained=False)
        load_state_strict(net, self.network_state(), str(self.path))
        return net.eval()

    def graph(self, merge: bool | None = None) -> LandmarkGraph:
        """Network + neighbour tables + decode; ``merge`` None keeps the checkpoint's setting."""
        return LandmarkGraph(
            self.network(), self.meanface, merge=self.merge if merge is None else merge
        ).eval()


def torch_load(path: str | Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` on the CPU (memory-mapped when the file allows it), with errors that
    name the file: missing, or not a PyTorch file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # files in the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zips, non-torch files
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"cannot read {what} {path} with torch.load(weights_only=True) ({type(err).__name__}: {reason}); "
            "is it a PyTorch file (not truncated)?"
        ) from err


def read_checkpoint(path: str | Path, *, num_landmarks: int | None = None) -> TrainedCheckpoint:
    """Read a pipnet-lit checkpoint (training's ``*.ckpt``, or `write_checkpoint`'s) without Lightning.

    ``num_landmarks``, when given, must equal the checkpoint's. Errors name the file and what to do: a bare
    state dict (the official ``epoch59.pth``: use ``pipnet_lit.convert``), missing settings, no mean face
    (a checkpoint saved before training started).
    """
    path = Path(path)
    ckpt = torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        hint = (
            " It looks like a bare state dict, e.g. the official code's epoch59.pth: convert it with "
            "`python -m pipnet_lit.convert official=... meanface=... data=... out=model.ckpt` (or "
            "Predictor.from_official(...))."
            if isinstance(ckpt, dict) and any(str(k).endswith("cls_layer.weight") for k in ckpt)
            else ""
        )
        raise ValueError(
            f"{path} is not a pipnet-lit checkpoint (it needs 'state_dict' and 'hyper_parameters')." + hint
        )
    hparams = dict(ckpt["hyper_parameters"])
    missing = [k for k in NETWORK_SETTINGS if k != "coarse_levels" and k not in hparams]
    if missing:
        raise ValueError(f"{path}: hyper_parameters lack {missing}; is it a PIPNetModule checkpoint?")
    state = dict(ckpt["state_dict"])
    extra = state.get("_extra_state")
    meanface = extra.get("meanface") if isinstance(extra, dict) else None
    if meanface is None:
        raise ValueError(
            f"{path} holds no mean face (state_dict['_extra_state']['meanface']): it was saved before "
            "training started; use a checkpoint written during or after training"
        )
    num = int(hparams["num_landmarks"])
    if num_landmarks is not None and int(num_landmarks) != num:
        raise ValueError(
            f"{path} predicts {num} landmarks, but {int(num_landmarks)} are expected here: use a "
            f"checkpoint trained on a {int(num_landmarks)}-point dataset (or a matching landmark scheme)"
        )
    meanface = torch.as_tensor(meanface, dtype=torch.float64).cpu().clone()
    if tuple(meanface.shape) != (num, 2):
        raise ValueError(f"{path}: the mean face has shape {tuple(meanface.shape)}, expected ({num}, 2)")
    info = ckpt.get("pipnet_lit")
    return TrainedCheckpoint(path, hparams, state, meanface, dict(info) if isinstance(info, dict) else {})


def write_checkpoint(
    graph: LandmarkGraph, path: str | Path, *, dataset: str | None = None, **provenance: Any
) -> Path:
    """Write ``graph`` as a checkpoint that `read_checkpoint`, ``pipnet_lit.eval`` and the LightningModule
    load (atomically: a temporary file renamed into place, so a crash never leaves half a file).

    The Lightning layout: ``state_dict`` (``net.*`` + ``_extra_state`` with the float64 mean face),
    ``hyper_parameters`` (the network settings, ``pretrained=False``, ``merge``) and
    ``pytorch-lightning_version``; plus ``pipnet_lit`` (format version, ``dataset`` and any ``provenance``
    strings). Needs a `PIPNet` network.
    """
    hparams = {**graph.settings(), "pretrained": False}
    state: dict[str, Any] = {f"net.{k}": v.detach().cpu().clone() for k, v in graph.net.state_dict().items()}
    state["_extra_state"] = {"meanface": graph.meanface_cpu.clone()}
    try:
        version = importlib.metadata.version("lightning")
    except importlib.metadata.PackageNotFoundError:
        version = "2.0.0"
    info = {"format": CHECKPOINT_FORMAT, "dataset": dataset, **{k: str(v) for k, v in provenance.items()}}
    ckpt = {
        "state_dict": state,
        "hyper_parameters": hparams,
        "pytorch-lightning_version": version,
        "epoch": 0,
        "global_step": 0,
        "pipnet_lit": info,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def load_state_strict(net: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a message listing what is missing, extra or mis-shaped."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or shapes:
        parts = []
        for name, items in (("missing", missing), ("unexpected", extra), ("shape (file vs model)", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{name}: {items[:5]}{more}")
        raise ValueError(f"{source} does not fit the network: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)
