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
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipnet_lit.files import atomic_write, stale_temporaries
from pipnet_lit.landmark_graph import LandmarkGraph
from pipnet_lit.models import NETWORK_SETTINGS, PIPNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "ResumePoint",
    "TrainedCheckpoint",
    "checkpoint_problem",
    "find_resume_point",
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
        try:
            net = PIPNet.from_settings(self.hparams, pretrained=False)
        except ValueError as err:  # settings no network has (an unknown backbone, a stride it lacks)
            raise ValueError(
                f"{self.path}: its hyper_parameters describe no network we build: {err}"
            ) from None
        load_state_strict(net, self.network_state(), str(self.path))
        return net.eval()

    def graph(self, merge: bool | None = None) -> LandmarkGraph:
        """Network + neighbour tables + decode; ``merge`` None keeps the checkpoint's setting."""
        return LandmarkGraph(
            self.network(), self.meanface, merge=self.merge if merge is None else merge
        ).eval()


def torch_load(path: str | Path, what: str, *, verify: bool = False) -> Any:
    """``torch.load(weights_only=True)`` on the CPU (memory-mapped when the file allows it), with errors that
    name the file: missing, cut short, holding Python objects ``weights_only`` refuses, or not a PyTorch file.

    ``verify``: first check the zip's CRC-32 checksums (one read of the file, fast), so that bytes damaged on
    the way (a bad copy, a bad disk) are refused instead of loading as wrong weights; memory-mapped loading
    checks nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if verify:
        _verify_zip(path, what)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # files in the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zips, non-torch files
        text = _ANSI.sub("", str(err)).strip()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        unpickler = [i for i, line in enumerate(lines) if "WeightsUnpickler error:" in line]
        if unpickler:  # torch's own words come after a paragraph about weights_only
            i = unpickler[0]
            tail = lines[i].split("WeightsUnpickler error:", 1)[1].strip()
            lines = [tail] if tail else lines[i + 1 : i + 2]
        reason = (lines or [""])[0][:200]
        found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
        if found:
            raise ValueError(
                f"cannot read {what} {path}: it holds a Python object ({found.group(1)}) that "
                "torch.load(weights_only=True) does not load (only tensors, numbers, strings and plain "
                "containers: a file that needs more could run code when loaded). If you trust the file, load "
                "it with torch.load(weights_only=False) and save what it holds as plain tensors"
            ) from err
        if isinstance(err, EOFError) or "central directory" in text or "Ran out of input" in text:
            raise ValueError(
                f"cannot read {what} {path}: the file is cut short (an interrupted download, copy or save?); "
                f"{type(err).__name__}: {reason}"
            ) from err
        raise ValueError(
            f"cannot read {what} {path} with torch.load(weights_only=True) ({type(err).__name__}: {reason}); "
            "is it a PyTorch file (not truncated)?"
        ) from err


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch colours parts of its messages


def _verify_zip(path: Path, what: str) -> None:
    """Raise when ``path`` is a zip (every torch.save file since PyTorch 1.6) whose data fails its CRC-32."""
    try:
        if not zipfile.is_zipfile(path):
            return  # cut short (no zip directory), legacy format or not torch at all: torch.load tells
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, NotImplementedError, ValueError) as err:
        raise ValueError(f"cannot read {what} {path}: its zip structure is damaged ({err})") from err
    if bad is not None:
        raise ValueError(
            f"cannot read {what} {path}: it is damaged (the data of {bad!r} fails its CRC-32 checksum: a bad "
            "download, copy or disk); get the file again"
        )


def read_checkpoint(path: str | Path, *, num_landmarks: int | None = None) -> TrainedCheckpoint:
    """Read a pipnet-lit checkpoint (training's ``*.ckpt``, or `write_checkpoint`'s) without Lightning.

    ``num_landmarks``, when given, must equal the checkpoint's. Errors name the file and what to do: a bare
    state dict (the official ``epoch59.pth``: use ``pipnet_lit.convert``), missing settings, no mean face
    (a checkpoint saved before training started).
    """
    path = Path(path)
    ckpt = torch_load(path, "checkpoint", verify=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        hint = (
            " It looks like a bare state dict, e.g. the official code's epoch59.pth: convert it with "
            "`python -m pipnet_lit.convert official=... meanface=... data=... out=model.ckpt` (or "
            "Predictor.from_official(...))."
            if isinstance(ckpt, dict) and any(str(k).endswith("cls_layer.weight") for k in ckpt)
            else ""
        )
        found = f"a dict of {sorted(map(str, ckpt))[:5]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path} is not a pipnet-lit checkpoint (it needs 'state_dict' and 'hyper_parameters'; found: "
            f"{found})." + hint
        )
    for key in ("hyper_parameters", "state_dict"):
        if not isinstance(ckpt[key], dict):
            raise ValueError(
                f"{path} is not a pipnet-lit checkpoint: its '{key}' is not a dict ({_kind(ckpt[key])})"
            )
    hparams = dict(ckpt["hyper_parameters"])
    missing = [k for k in NETWORK_SETTINGS if k != "coarse_levels" and k not in hparams]
    if missing:
        raise ValueError(f"{path}: hyper_parameters lack {missing}; is it a PIPNetModule checkpoint?")
    _check_settings(path, hparams)
    state = dict(ckpt["state_dict"])
    _check_state_values(path, state)
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
    try:
        meanface = torch.as_tensor(meanface, dtype=torch.float64).cpu().clone()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{path}: the mean face is not ({num}, 2) numbers ({_kind(meanface)})") from None
    if tuple(meanface.shape) != (num, 2):
        raise ValueError(f"{path}: the mean face has shape {tuple(meanface.shape)}, expected ({num}, 2)")
    if not torch.isfinite(meanface).all():
        raise ValueError(f"{path}: the mean face holds NaN or inf (a training that diverged?)")
    _check_head(path, state, num, int(hparams["num_nb"]))
    info = ckpt.get("pipnet_lit")
    return TrainedCheckpoint(path, hparams, state, meanface, dict(info) if isinstance(info, dict) else {})


def _kind(value: Any) -> str:
    return f"{value.dtype} tensor" if isinstance(value, Tensor) else type(value).__name__


def _check_settings(path: Path, hparams: dict[str, Any]) -> None:
    """The recorded network settings have the types a network is built from (a string backbone, positive
    integers), so a damaged or foreign file fails here, naming the key, rather than deep inside PIPNet."""
    if not isinstance(hparams["backbone"], str):
        raise ValueError(f"{path}: hyper_parameters['backbone'] is not a name ({_kind(hparams['backbone'])})")
    for key in ("num_landmarks", "num_nb", "net_stride", "input_size", "coarse_levels"):
        value = hparams.get(key, 0 if key == "coarse_levels" else None)
        minimum = 0 if key == "coarse_levels" else 1
        if value is None and key == "coarse_levels":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(
                f"{path}: hyper_parameters['{key}'] = {value!r} ({_kind(value)}); expected an integer >= "
                f"{minimum}: is it a PIPNetModule checkpoint?"
            )


def _check_state_values(path: Path, state: dict[str, Any]) -> None:
    """Every network entry of the state dict is a tensor."""
    bad = [
        f"{k} ({_kind(v)})" for k, v in state.items() if k.startswith("net.") and not isinstance(v, Tensor)
    ]
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(f"{path}: state_dict entries that are not tensors: {bad[:5]}{more}")
    if not any(k.startswith("net.") for k in state):
        raise ValueError(f"{path}: the state_dict holds no network weights ('net.*' entries)")


def _check_head(path: Path, state: dict[str, Any], num_landmarks: int, num_nb: int) -> None:
    """The head's output channels agree with the recorded landmark and neighbour counts, checked before a
    network of those settings is built (a file claiming num_nb=10**6 would otherwise allocate a huge head)."""
    expected = {"net.cls_layer.weight": num_landmarks, "net.nb_x_layer.weight": num_landmarks * num_nb}
    for key, channels in expected.items():
        weight = state.get(key)
        if weight is None:
            raise ValueError(f"{path}: the state_dict has no {key}: not a PIPNet checkpoint")
        if weight.ndim < 1 or int(weight.shape[0]) != channels:
            raise ValueError(
                f"{path}: {key} has shape {tuple(weight.shape)}, but hyper_parameters (num_landmarks="
                f"{num_landmarks}, num_nb={num_nb}) need {channels} output channels"
            )


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
    """``load_state_dict(strict=True)`` with a message listing what is missing, extra, not a tensor,
    mis-shaped, of a kind the model cannot take (integer or boolean weights for float ones: a float16 or
    float64 file loads, converted) or not finite (NaN / inf weights: a training that diverged)."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    common = [k for k in own if k in state]
    not_tensors = [f"{k} ({_kind(state[k])})" for k in common if not isinstance(state[k], Tensor)]
    common = [k for k in common if isinstance(state[k], Tensor)]
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in common
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    dtypes = [
        f"{k}: {state[k].dtype} vs {own[k].dtype}"
        for k in common
        if own[k].is_floating_point() and not state[k].is_floating_point()
    ]
    nonfinite = [
        k for k in common if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())
    ]
    if missing or extra or not_tensors or shapes or dtypes or nonfinite:
        parts = []
        for name, items in (
            ("missing", missing),
            ("unexpected", extra),
            ("not tensors", not_tensors),
            ("shape (file vs model)", shapes),
            ("dtype (file vs model)", dtypes),
            ("NaN or inf values (a training that diverged?)", nonfinite),
        ):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{name}: {items[:5]}{more}")
        raise ValueError(f"{source} does not fit the network: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)


# -- resuming ---------------------------------------------------------------------------------------------


def checkpoint_problem(path: str | Path) -> tuple[str | None, tuple[int, int]]:
    """Whether training can resume from ``path``: (None, (epoch, global_step)) when it can, else (the reason,
    (-1, -1)). The one definition of "checkpoint usable" for resuming: readable with
    ``torch.load(weights_only=True)`` (a file cut short by a kill or a full disk is not: its zip directory is
    missing) and holding what Lightning restores (weights, optimizer states, loop state, epoch and step).
    Memory-mapped: nothing but the metadata is read."""
    try:
        ckpt = torch_load(path, "checkpoint")
    except (ValueError, FileNotFoundError) as err:
        return str(err), (-1, -1)
    if not isinstance(ckpt, dict):
        return f"{path} holds a {type(ckpt).__name__}, not a training checkpoint", (-1, -1)
    missing = [
        k for k in ("state_dict", "optimizer_states", "loops", "epoch", "global_step") if k not in ckpt
    ]
    if missing:
        return f"{path} is not a training checkpoint (no {', '.join(missing)}): it cannot resume a run", (
            -1,
            -1,
        )
    return None, (int(ckpt["epoch"]), int(ckpt["global_step"]))


@dataclass(frozen=True)
class ResumePoint:
    """Where ``ckpt_path=last`` resumes: ``path`` (None: no checkpoint at all, start fresh), the damaged
    checkpoints it passed over (path, reason) and the temporary files of killed saves it found."""

    path: Path | None
    skipped: tuple[tuple[Path, str], ...] = ()
    temporaries: tuple[Path, ...] = ()

    def report(self) -> list[str]:
        """One line per skipped checkpoint, for the log."""
        chosen = f"; resuming from {self.path.name}" if self.path is not None else ""
        return [f"skipped checkpoint {p.name}: {why}{chosen}" for p, why in self.skipped]


class NoResumableCheckpointError(RuntimeError):
    """Every checkpoint of a run is damaged: the message lists them and how to start fresh."""


def find_resume_point(folder: str | Path) -> ResumePoint:
    """The newest checkpoint in ``folder`` that training can resume from (`checkpoint_problem`), by its
    recorded (global step, epoch), ``last.ckpt`` first among equals.

    No ``*.ckpt`` at all: ``ResumePoint(None)`` (a fresh run). Only damaged ones:
    `NoResumableCheckpointError` naming each and why. Temporary files of killed saves are reported (and
    never taken for checkpoints: their names end in ``.tmp-<pid>``).
    """
    folder = Path(folder)
    candidates = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    temporaries = tuple(stale_temporaries(folder))
    if not candidates:
        return ResumePoint(None, (), temporaries)
    usable, skipped = [], []
    for path in candidates:
        problem, (epoch, step) = checkpoint_problem(path)
        if problem is None:
            usable.append(((step, epoch, path.name == "last.ckpt"), path))
        else:
            skipped.append((path, problem))
    if not usable:
        lines = "\n".join(f"  {p.name}: {why}" for p, why in skipped)
        raise NoResumableCheckpointError(
            f"ckpt_path=last: no checkpoint in {folder} can be resumed from:\n{lines}\n"
            "Start the run afresh under another name (run_name=<new name>), or move that folder away."
        )
    usable.sort(key=lambda item: item[0])
    return ResumePoint(usable[-1][1], tuple(skipped), temporaries)
