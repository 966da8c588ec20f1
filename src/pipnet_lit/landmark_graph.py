"""The inference core: network + mean-face neighbour tables + decode, in one `nn.Module` (no Lightning).

`LandmarkGraph` is the one place where a trained PIPNet becomes landmarks. Everything that runs one goes
through it: the LightningModule's evaluation, the `Predictor` (which adds preprocessing, crop / uncrop and
batching), the self-training chain's pseudo-labels, `pipnet_lit.export` (which traces it) and the eager
runtime. A change to decoding is made here, once (the decode maths itself is `pipnet_lit.pip.decode`).

    graph = read_checkpoint("model.ckpt").graph()       # pipnet_lit.checkpoints
    landmarks, scores = graph(crops)                    # crops (B, 3, S, S) ImageNet-normalized RGB
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipnet_lit.models import PIPNet
from pipnet_lit.pip import Neighbors, PIPOutputs, build_neighbors, decode_details

__all__ = ["CropPrediction", "LandmarkGraph"]


@dataclass
class CropPrediction:
    """Landmarks of a batch of crops: ``landmarks`` (B, L, 2) crop fractions, ``scores`` (B, L)."""

    landmarks: Tensor
    scores: Tensor


def is_on(current: torch.device, wanted: torch.device | str) -> bool:
    """Whether a tensor on ``current`` is on ``wanted``; a device without an index ('cuda') means any of
    its kind, so tensors on 'cuda:0' are on 'cuda' and need no move."""
    wanted = torch.device(wanted)
    return current.type == wanted.type and (wanted.index is None or current.index == wanted.index)


class LandmarkGraph(nn.Module):
    """Network + neighbour tables + decode in one traceable module.

    forward(crops (B, 3, S, S) ImageNet-normalized RGB float32) -> (landmarks (B, L, 2) in [0, 1] of the crop,
    merged with the neighbour votes unless ``merge=False``; scores (B, L), each landmark's raw winning
    score-map value: a confidence, not a calibrated probability). The neighbour tables are buffers, so they
    move with ``.to(device)`` and become constants of an exported graph; the mean face is kept in float64 on
    the CPU as well (``meanface``), since the tables are computed from it.

    Args:
        net: the network: a `PIPNet`, or any module mapping (B, 3, S, S) images to `PIPOutputs` (then
            ``num_nb`` and ``input_size`` must be given).
        meanface: (L, 2) mean face in crop fractions; with ``num_nb`` it fixes the neighbour tables.
        merge: average each landmark's own estimate with its neighbours' votes (the paper's inference).
        num_nb, input_size: default to the `PIPNet`'s own; given for a `PIPNet`, they must agree with it.
    """

    def __init__(
        self,
        net: nn.Module,
        meanface: Tensor | np.ndarray,
        *,
        merge: bool = True,
        num_nb: int | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        mf = torch.as_tensor(np.asarray(meanface), dtype=torch.float64).cpu().clone()
        if mf.ndim != 2 or mf.shape[1] != 2:
            raise ValueError(f"meanface must have shape (L, 2), got {tuple(mf.shape)}")
        if isinstance(net, PIPNet):
            given = {"num_nb": num_nb, "input_size": input_size}
            own = {"num_nb": net.num_nb, "input_size": net.input_size}
            diffs = [
                f"{k}={given[k]} but the network has {own[k]}" for k in own if given[k] not in (None, own[k])
            ]
            if net.num_landmarks != mf.shape[0]:
                diffs.insert(
                    0,
                    f"mean face of shape {tuple(mf.shape)}; the network predicts {net.num_landmarks} "
                    f"landmarks, so it needs ({net.num_landmarks}, 2)",
                )
            if diffs:
                raise ValueError("the network and its settings disagree: " + "; ".join(diffs))
            num_nb, input_size = net.num_nb, net.input_size
        elif num_nb is None or input_size is None:
            raise ValueError(
                f"a {type(net).__name__} network needs num_nb= and input_size= (a PIPNet knows its own)"
            )
        self.net = net
        self.merge = bool(merge)
        self.num_nb = int(num_nb)
        self.input_size = int(input_size)
        self.meanface_cpu = mf  # float64, CPU: not a buffer, so no cast or move changes the tables' source
        tables = build_neighbors(mf, self.num_nb)
        self.max_len = tables.max_len
        self.register_buffer("nb_indices", tables.indices)
        self.register_buffer("reverse_index1", tables.reverse_index1)
        self.register_buffer("reverse_index2", tables.reverse_index2)
        self.register_buffer("meanface", mf.to(torch.float32))

    @property
    def num_landmarks(self) -> int:
        return int(self.meanface_cpu.shape[0])

    @property
    def device(self) -> torch.device:
        """The device of the neighbour tables (they move with the network)."""
        return self.nb_indices.device

    def neighbors(self, device: torch.device | str | None = None) -> Neighbors:
        """The neighbour tables; with ``device``, on that device (moved there, and kept there, when they are
        elsewhere: a network moved without its graph, as Lightning moves a LightningModule's submodules)."""
        if device is not None and not is_on(self.nb_indices.device, device):
            for name in ("nb_indices", "reverse_index1", "reverse_index2", "meanface"):
                setattr(self, name, getattr(self, name).to(device))
        return Neighbors(self.nb_indices, self.reverse_index1, self.reverse_index2, self.max_len)

    def decode(self, outputs: PIPOutputs) -> CropPrediction:
        """Head outputs -> landmarks (B, L, 2) crop fractions and scores (B, L), on the outputs' device."""
        tables = self.neighbors(outputs[0].device)
        details = decode_details(outputs.float(), tables)  # bf16 maps (autocast) decode in fp32
        return CropPrediction(details.merged if self.merge else details.own, details.max_score)

    def landmarks(self, images: Tensor) -> CropPrediction:
        """Forward + decode of preprocessed images (B, 3, S, S); changes neither mode nor autograd state."""
        return self.decode(self.net(images))

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        out = self.landmarks(crops)
        return out.landmarks, out.scores

    def settings(self) -> dict[str, Any]:
        """The network settings (`PIPNet.settings`) plus ``merge``; needs a `PIPNet`."""
        if not isinstance(self.net, PIPNet):
            raise TypeError(f"settings need a PIPNet, this graph wraps a {type(self.net).__name__}")
        return {**self.net.settings(), "merge": self.merge}
