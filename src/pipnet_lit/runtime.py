"""Run an exported PIPNet: one callable per backend, crops (B, 3, S, S) -> landmarks (B, L, 2).

```python
from pipnet_lit.runtime import load_runtime

run = load_runtime("model_int8.xml")                  # backend from the suffix, precision from the file
landmarks = run(crops)                                # (B, L, 2) in [0, 1] of each crop, float32 tensor
landmarks, scores = run.run(crops)                    # scores: (B, L) raw winning score per landmark
```

| backend | file | precisions |
|---|---|---|
| `eager` | a training checkpoint (`.ckpt`) or a `LandmarkGraph` | fp32, bf16 (autocast; channels-last) |
| `torchscript` | `.pt` from `export format=torchscript` | fp32 |
| `onnxruntime` | `.onnx` from `export format=onnx [quantize=int8]` | fp32, int8 |
| `openvino` | `.xml` from `export format=openvino [quantize=int8]` | fp32, bf16, int8 |

Crops are ImageNet-normalized RGB float32 (numpy or torch), S the model's input size. Outputs are float32 CPU
tensors (the eager backend keeps the input's device). OpenVINO compiles fp32 with the precision hint set to
f32 explicitly (on CPUs with bf16 it would otherwise run in bf16) and int8 models with f32 for what stays
unquantized, so the decode is exact; `precision="bf16"` asks for bf16 on such CPUs.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipnet_lit.checkpoints import read_checkpoint
from pipnet_lit.export import (
    INPUT_NAME,
    OUTPUT_NAMES,
    TORCHSCRIPT_EXTRA,
    graph_metadata,
    read_onnx_metadata,
    read_openvino_metadata,
    require_module,
)
from pipnet_lit.landmark_graph import LandmarkGraph

BACKENDS = ("eager", "torchscript", "onnxruntime", "openvino")
PRECISIONS: dict[str, tuple[str, ...]] = {
    "eager": ("fp32", "bf16"),
    "torchscript": ("fp32",),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
BACKEND_BY_SUFFIX = {".ckpt": "eager", ".pt": "torchscript", ".ts": "torchscript", ".onnx": "onnxruntime"}
BACKEND_BY_SUFFIX[".xml"] = "openvino"
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class Runtime(ABC):
    """A loaded model: `run(crops)` -> (landmarks (B, L, 2), scores (B, L)); `__call__` -> landmarks.

    Attributes: backend, precision, device, metadata (the exported JSON: input_size, num_landmarks, ...).
    """

    backend: str = ""

    def __init__(self, precision: str, metadata: dict[str, Any], device: str = "cpu") -> None:
        self.precision = precision
        self.metadata = metadata
        self.device = device
        self.input_size = int(metadata["input_size"]) if "input_size" in metadata else None
        self.num_landmarks = int(metadata["num_landmarks"]) if "num_landmarks" in metadata else None

    def _check(self, crops: Tensor | np.ndarray) -> None:
        shape = tuple(crops.shape)
        size = self.input_size
        if len(shape) != 4 or shape[1] != 3 or (size is not None and shape[2:] != (size, size)):
            expected = f"(B, 3, {size}, {size})" if size else "(B, 3, S, S)"
            raise ValueError(f"{self.backend} runtime: crops must have shape {expected}, got {shape}")

    def run(self, crops: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """crops (B, 3, S, S) float32 normalized -> (landmarks (B, L, 2), scores (B, L)) float32."""
        self._check(crops)
        return self._run(crops)

    @abstractmethod
    def _run(self, crops: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """The backend's forward: each runtime class implements it."""

    def __call__(self, crops: Tensor | np.ndarray) -> Tensor:
        return self.run(crops)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r}, device={self.device!r})"


def _numpy(crops: Tensor | np.ndarray) -> np.ndarray:
    array = crops.detach().cpu().numpy() if isinstance(crops, Tensor) else crops
    return np.ascontiguousarray(array, dtype=np.float32)


def _tensor(crops: Tensor | np.ndarray) -> Tensor:
    return crops if isinstance(crops, Tensor) else torch.from_numpy(np.asarray(crops, dtype=np.float32))


class EagerRuntime(Runtime):
    """The PyTorch module under `torch.inference_mode`, channels-last; bf16 = autocast (CPU or GPU)."""

    backend = "eager"

    def __init__(self, graph: LandmarkGraph, precision: str = "fp32", device: str = "cpu") -> None:
        super().__init__(precision, graph_metadata(graph, precision), device)
        # a copy: channels-last weights and the device move must not change the caller's module
        self.graph = copy.deepcopy(graph).eval().to(device).to(memory_format=torch.channels_last)

    def _run(self, crops: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        x = _tensor(crops).to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        device_type = torch.device(self.device).type
        with (
            torch.inference_mode(),
            torch.autocast(device_type, torch.bfloat16, enabled=self.precision == "bf16"),
        ):
            landmarks, scores = self.graph(x)
        return landmarks.float(), scores.float()


class TorchScriptRuntime(Runtime):
    """A traced module from `export format=torchscript`."""

    backend = "torchscript"

    def __init__(self, path: Path, precision: str = "fp32", device: str = "cpu") -> None:
        extra = {TORCHSCRIPT_EXTRA: ""}
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        metadata = json.loads(extra[TORCHSCRIPT_EXTRA]) if extra[TORCHSCRIPT_EXTRA] else {}
        super().__init__(precision, metadata, device)
        self.module = module.eval()

    def _run(self, crops: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        with torch.inference_mode():
            landmarks, scores = self.module(_tensor(crops).to(self.device, torch.float32))
        return landmarks, scores


class OnnxRuntime(Runtime):
    """An ONNX Runtime session (CPU). int8 files run with `disabled_optimizers=["WeightBiasQuantization"]`:
    ONNX Runtime's weight/bias re-quantization pass otherwise slows the QDQ model down.

    ``spinning``: whether the intra-op threads busy-wait for work after a call
    (``session.intra_op.allow_spinning``); None keeps ONNX Runtime's default (on). Spinning threads take
    the cores from whatever runs next in the process (a face detector, drawing, encoding)."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: Path,
        precision: str,
        metadata: dict[str, Any],
        num_threads: int | None = None,
        spinning: bool | None = None,
    ) -> None:
        ort = require_module("onnxruntime", "run ONNX models", extra="onnxruntime")
        super().__init__(precision, metadata)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        if spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        disabled = ["WeightBiasQuantization"] if precision == "int8" else []
        self.session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
        )

    def _run(self, crops: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        landmarks, scores = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: _numpy(crops)})
        return torch.from_numpy(landmarks), torch.from_numpy(scores)


class OpenVinoRuntime(Runtime):
    """An OpenVINO CPU compiled model, the inference precision set explicitly (see the module doc)."""

    backend = "openvino"

    def __init__(
        self, model: Any, precision: str, metadata: dict[str, Any], num_threads: int | None = None
    ) -> None:
        ov = require_module("openvino", "run OpenVINO models", extra="openvino")
        super().__init__(precision, metadata)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._outputs = [self.compiled.output(name) for name in OUTPUT_NAMES]

    def _run(self, crops: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        result = self.request.infer({INPUT_NAME: _numpy(crops)})
        landmarks, scores = (np.array(result[o], dtype=np.float32) for o in self._outputs)
        return torch.from_numpy(landmarks), torch.from_numpy(scores)


def _precision(backend: str, requested: str | None, stored: str | None, path: Path) -> str:
    """The precision to run: the file's own unless asked otherwise (fp32 files may run in bf16)."""
    stored = stored or "fp32"
    precision = requested or stored
    if precision not in PRECISIONS[backend]:
        raise ValueError(
            f"precision={precision!r} is not available for backend {backend!r}; choose from "
            f"{list(PRECISIONS[backend])}"
        )
    if stored == "int8" and precision != "int8":
        raise ValueError(f"{path} is an int8 model; load it with precision='int8' (or None)")
    if precision == "int8" and stored != "int8":
        raise ValueError(
            f"{path} is an fp32 model; make an int8 one with `python -m pipnet_lit.export ckpt=... "
            f"format={'onnx' if backend == 'onnxruntime' else backend} quantize=int8 calibrate=...`"
        )
    return precision


def load_runtime(
    path: str | Path | LandmarkGraph,
    backend: str | None = None,
    precision: str | None = None,
    device: str = "cpu",
    num_threads: int | None = None,
    spinning: bool | None = None,
) -> Runtime:
    """Load an exported model (or a checkpoint / `LandmarkGraph` for eager PyTorch) as a callable.

    Args:
        path: `.ckpt` or `LandmarkGraph` (eager), `.pt` (torchscript), `.onnx` (onnxruntime), `.xml`
            (openvino).
        backend: one of `BACKENDS`; None picks it from the suffix.
        precision: fp32, bf16 or int8 (see `PRECISIONS`); None: the file's own (fp32 for checkpoints).
        device: eager / torchscript only ('cpu', 'cuda'); the other backends run on the CPU.
        num_threads: intra-op threads for ONNX Runtime / OpenVINO (None: their default, every core).
        spinning: ONNX Runtime only: whether its idle intra-op threads busy-wait between calls (None: its
            default, on); ignored by the other backends.
    """
    if isinstance(path, LandmarkGraph):
        backend = backend or "eager"
        if backend != "eager":
            raise ValueError(f"a LandmarkGraph runs with backend='eager', not {backend!r}; export it first")
        return EagerRuntime(path, _precision("eager", precision, None, Path("<graph>")), device)
    path = Path(path)
    if backend is None:
        if path.suffix not in BACKEND_BY_SUFFIX:
            raise ValueError(
                f"cannot tell the backend of {path} from its suffix; pass backend= one of {BACKENDS} "
                f"(suffixes: {', '.join(BACKEND_BY_SUFFIX)})"
            )
        backend = BACKEND_BY_SUFFIX[path.suffix]
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (an exported model for backend {backend!r})")
    if device != "cpu" and backend in ("onnxruntime", "openvino"):
        raise ValueError(f"backend {backend!r} runs on the CPU here; use device='cpu'")
    if backend == "eager":
        return EagerRuntime(read_checkpoint(path).graph(), _precision(backend, precision, None, path), device)
    if backend == "torchscript":
        return TorchScriptRuntime(path, _precision(backend, precision, None, path), device)
    if backend == "onnxruntime":
        metadata = read_onnx_metadata(path)
        return OnnxRuntime(
            path,
            _precision(backend, precision, metadata.get("precision"), path),
            metadata,
            num_threads,
            spinning,
        )
    ov = require_module("openvino", "run OpenVINO models", extra="openvino")
    model = ov.Core().read_model(str(path))
    metadata = read_openvino_metadata(model)
    return OpenVinoRuntime(
        model, _precision(backend, precision, metadata.get("precision"), path), metadata, num_threads
    )


def supports_bf16(backend: str, device: str = "cpu") -> bool:
    """Whether ``precision="bf16"`` runs natively for ``backend`` on ``device``.

    eager: a CUDA device with bf16, or a CPU with bf16 instructions (PyTorch's oneDNN check); openvino: the
    CPU plug-in lists ``BF16`` among its optimization capabilities. Elsewhere bf16 would be emulated (eager:
    slower than fp32) or silently run in f32 (OpenVINO). False for backends without bf16 (`PRECISIONS`).
    """
    if "bf16" not in PRECISIONS.get(backend, ()):
        return False
    if backend == "eager":
        if torch.device(device).type == "cuda":
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        try:
            return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a private check; a build without it: assume no
            return False
    ov = require_module("openvino", "run OpenVINO models", extra="openvino")
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
