"""Export a trained PIPNet with decoding inside the graph: crops in, landmarks out.

```bash
python -m pipnet_lit.export ckpt=model.ckpt format=onnx out=model.onnx          # ONNX, dynamic batch
python -m pipnet_lit.export ckpt=model.ckpt format=torchscript out=model.pt     # TorchScript (trace)
python -m pipnet_lit.export ckpt=model.ckpt format=openvino out=model.xml       # OpenVINO IR (fp32 weights)
python -m pipnet_lit.export ckpt=model.ckpt format=openvino quantize=int8 calibrate=synthetic n=100
python -m pipnet_lit.export ckpt=model.ckpt format=onnx quantize=int8 calibrate=/path/to/crops
```

Every exported model maps ImageNet-normalized RGB crops (B, 3, S, S) float32 to `landmarks` (B, L, 2), the
merged decode in [0, 1] crop coordinates, and `scores` (B, L), each landmark's winning raw score-map value
(`pipnet_lit.pip.decode_details`). The batch is dynamic; S is the checkpoint's input size. A JSON description
(input size, landmarks, normalization, precision) travels inside the file: ONNX metadata `pipnet`, OpenVINO
rt_info `pipnet`, TorchScript extra file `pipnet.json`. `pipnet_lit.runtime.load_runtime` runs any of them.

int8 is post-training static quantization calibrated on `n` training crops: `calibrate=<data config>`
(a name in the config folder's `data/` group, e.g. `synthetic` or `300w`, with `data.*` overrides such as
`data.root=/data`: the training split's cached crops) or `calibrate=<folder>` (any face crops, resized to S).
OpenVINO uses NNCF; ONNX Runtime static QDQ per-channel with the transposed convolution (stride 16) kept fp32.
Only the network is quantized: the decode stays float32 in both.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipnet_lit.landmark_graph import LandmarkGraph
from pipnet_lit.models.backbones import IMAGENET_MEAN, IMAGENET_STD

FORMATS = ("onnx", "torchscript", "openvino")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml"}
INPUT_NAME = "crops"
OUTPUT_NAMES = ("landmarks", "scores")
METADATA_KEY = "pipnet"
TORCHSCRIPT_EXTRA = "pipnet.json"
FORMAT_VERSION = 1
ONNX_OPSET = 18
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def graph_metadata(graph: LandmarkGraph, precision: str = "fp32") -> dict[str, Any]:
    """What a runtime needs to feed an exported graph and read its outputs (stored as JSON in the file)."""
    return {
        "format_version": FORMAT_VERSION,
        "precision": precision,
        **{
            k: graph.settings()[k]
            for k in ("input_size", "num_landmarks", "num_nb", "backbone", "net_stride")
        },
        "merge": graph.merge,
        "input": f"{INPUT_NAME}: (B, 3, S, S) float32 RGB, (pixel / 255 - mean) / std",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "outputs": {
            OUTPUT_NAMES[0]: "(B, L, 2) x, y in [0, 1] of the crop",
            OUTPUT_NAMES[1]: "(B, L) raw winning score-map value per landmark",
        },
    }


# -- export -----------------------------------------------------------------------------------------
def _example(graph: LandmarkGraph, batch: int = 2) -> Tensor:
    device = graph.device
    return torch.randn(
        batch, 3, graph.input_size, graph.input_size, generator=torch.Generator().manual_seed(0)
    ).to(device)


def export_torchscript(graph: LandmarkGraph, out: str | Path) -> Path:
    """Trace `graph` (eval mode, batch dynamic) to a TorchScript file with the metadata as `pipnet.json`."""
    out = _prepare_out(out)
    graph = graph.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # shape checks turned into constants: expected when tracing
        traced = torch.jit.trace(graph, _example(graph), check_trace=False)
    extra = {TORCHSCRIPT_EXTRA: json.dumps(graph_metadata(graph, "fp32"))}
    torch.jit.save(traced, str(out), _extra_files=extra)
    return out


def export_onnx(graph: LandmarkGraph, out: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Export `graph` to ONNX (torch.export-based exporter) with a dynamic batch and the metadata.

    Inputs `crops` (B, 3, S, S); outputs `landmarks` (B, L, 2), `scores` (B, L).
    """
    onnx = require_module("onnx", "export to ONNX", extra="onnx onnxscript")
    require_module("onnxscript", "export to ONNX (the torch.export-based exporter)", extra="onnx onnxscript")
    out = _prepare_out(out)
    graph = graph.eval()
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            (_example(graph),),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"crops": {0: batch}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    model = program.model_proto
    _set_onnx_metadata(model, graph_metadata(graph, "fp32"))
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out))
    return out


def _set_onnx_metadata(model: Any, metadata: dict[str, Any]) -> None:
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The `pipnet` JSON of an exported ONNX file ({} if it has none)."""
    onnx = require_module("onnx", "read an ONNX file", extra="onnx")
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}


def export_openvino(
    graph: LandmarkGraph,
    out: str | Path,
    crops: Tensor | None = None,
    onnx_path: str | Path | None = None,
) -> Path:
    """OpenVINO IR (`out` .xml + .bin) converted from the ONNX export; fp32 weights, or int8 with `crops`.

    crops: (N, 3, S, S) calibration crops; when given, the network is quantized to int8 with NNCF
        post-training quantization (`quantize_openvino`).
    onnx_path: an fp32 ONNX export of `graph` to convert (saves exporting again); None exports one.
    """
    ov = require_module("openvino", "export to OpenVINO", extra="openvino")
    out = _prepare_out(out)
    if out.suffix != ".xml":
        raise ValueError(f"out={out}: an OpenVINO model is an .xml file (weights go in the .bin beside it)")
    with tempfile.TemporaryDirectory(prefix="pipnet-export-") as tmp:
        if onnx_path is None:
            onnx_path = export_onnx(graph, Path(tmp) / "model.onnx")
        model = ov.convert_model(str(onnx_path))
    precision = "fp32"
    if crops is not None:
        model = quantize_openvino(model, crops)
        precision = "int8"
    model.set_rt_info(json.dumps(graph_metadata(graph, precision)), [METADATA_KEY])
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out


def read_openvino_metadata(model: Any) -> dict[str, Any]:
    """The `pipnet` JSON of an OpenVINO model ({} if it has none)."""
    if not model.has_rt_info([METADATA_KEY]):
        return {}
    return json.loads(model.get_rt_info([METADATA_KEY]).astype(str))


# -- int8 ---------------------------------------------------------------------------------------------
def _network_node_names(
    nodes: Sequence[tuple[str, str, list[str], list[str]]], conv_types: set[str]
) -> set[str]:
    """Names of the nodes the network's convolutions depend on, the convolutions included.

    nodes: (name, op type, input names, output names). The decode (argmax, gathers, the arithmetic of the
    merge) lies downstream of the last convolutions, so it is never in this set.
    """
    producer = {out: node for node in nodes for out in node[3]}
    keep: set[str] = set()
    stack = [node for node in nodes if node[1] in conv_types]
    while stack:
        node = stack.pop()
        if node[0] in keep:
            continue
        keep.add(node[0])
        stack.extend(producer[i] for i in node[2] if i in producer)
    return keep


def quantize_openvino(model: Any, crops: Tensor | np.ndarray) -> Any:
    """NNCF post-training int8 quantization of an OpenVINO model (the decode ops are left float).

    crops: (N, 3, S, S) float32 calibration crops; N is the subset size.
    """
    nncf = require_module("nncf", "quantize for OpenVINO", extra="nncf")
    nncf.set_log_level(logging.WARNING)
    data = _as_batches(crops)
    nodes = [
        (
            op.get_friendly_name(),
            op.get_type_name(),
            [v.get_node().get_friendly_name() for v in op.input_values()],
            [op.get_friendly_name()],
        )
        for op in model.get_ordered_ops()
    ]
    network = _network_node_names(
        nodes, {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}
    )
    decode = [
        name
        for name, kind, _, _ in nodes
        if name not in network and kind not in ("Parameter", "Result", "Constant")
    ]
    return nncf.quantize(
        model,
        nncf.Dataset(data),
        subset_size=len(data),
        ignored_scope=nncf.IgnoredScope(names=decode, validate=False),
    )


def quantize_onnx(fp32_path: str | Path, out: str | Path, crops: Tensor | np.ndarray) -> Path:
    """ONNX Runtime static int8 quantization: QDQ, per-channel weights, the network's ops only.

    Quantized: convolutions, residual additions, ReLUs and max-pooling of the network; the transposed
    convolution (stride-16 networks) stays fp32, as does the decode. Run the result with the session option
    `disabled_optimizers=["WeightBiasQuantization"]` (`pipnet_lit.runtime` does): both are what makes it fast.
    """
    onnx = require_module("onnx", "quantize for ONNX Runtime", extra="onnx onnxruntime")
    quant = require_module("onnxruntime.quantization", "quantize for ONNX Runtime", extra="onnxruntime")
    out = _prepare_out(out)
    model = onnx.load(str(fp32_path))
    nodes = [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node]
    network = _network_node_names(nodes, {"Conv"})
    metadata = read_onnx_metadata(fp32_path)

    class Reader(quant.CalibrationDataReader):
        def __init__(self, batches: list[np.ndarray]) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    quant.quantize_static(
        str(fp32_path),
        str(out),
        Reader(_as_batches(crops)),
        quant_format=quant.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quant.QuantType.QUInt8,
        weight_type=quant.QuantType.QInt8,
        op_types_to_quantize=["Conv", "Add", "Relu", "MaxPool"],
        nodes_to_quantize=sorted(network),
        nodes_to_exclude=[n.name for n in model.graph.node if n.op_type == "ConvTranspose"],
        calibrate_method=quant.CalibrationMethod.MinMax,
    )
    quantized = onnx.load(str(out))
    _set_onnx_metadata(quantized, {**metadata, "precision": "int8"})
    onnx.save_model(quantized, str(out))
    return out


def _as_batches(crops: Tensor | np.ndarray) -> list[np.ndarray]:
    array = crops.detach().cpu().numpy() if isinstance(crops, Tensor) else np.asarray(crops)
    if array.ndim != 4 or array.shape[1] != 3 or len(array) == 0:
        raise ValueError(f"calibration crops must have shape (N, 3, S, S) with N >= 1, got {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    return [array[i : i + 1] for i in range(len(array))]


# -- calibration crops --------------------------------------------------------------------------------
def read_crops(paths: Sequence[str | Path], input_size: int) -> Tensor:
    """Face crops from image files, resized to `input_size` and normalized: (N, 3, S, S) float32."""
    import cv2

    from pipnet_lit.datasets.transforms import build_eval_transform

    transform = build_eval_transform(input_size)
    tensors = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read image {path} (calibration crops)")
        tensors.append(transform(image, np.zeros((0, 2), dtype=np.float32))[0])
    return torch.stack(tensors)


def crop_image_paths(folder: str | Path) -> list[Path]:
    """The images under ``folder`` (recursively), sorted; an error naming the folder when there is none."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"calibrate={folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in that folder")
    return paths


def sample_calibration_crops(
    paths: Sequence[str | Path], input_size: int, n: int = 100, seed: int = 0
) -> Tensor:
    """``n`` of ``paths`` drawn (seeded, without replacement, kept in order), read as crops (N, 3, S, S)."""
    if n < 1:
        raise ValueError(f"n={n}: calibrate on at least one crop (about 100 is plenty)")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), size=min(n, len(paths)), replace=False).tolist())
    return read_crops([paths[i] for i in chosen], input_size)


def export_graph(
    graph: LandmarkGraph,
    format: str,
    out: str | Path,
    crops: Tensor | None = None,
    opset: int = ONNX_OPSET,
) -> Path:
    """Export ``graph`` to ``format`` (onnx, torchscript, openvino); int8 when calibration ``crops`` are
    given (onnx, openvino). Returns the written file."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: choose one of {', '.join(FORMATS)}")
    if format == "torchscript":
        if crops is not None:
            raise ValueError("quantize=int8 is for format=onnx (ONNX Runtime) or format=openvino")
        return export_torchscript(graph, out)
    if format == "openvino":
        return export_openvino(graph, out, crops)
    if crops is None:
        return export_onnx(graph, out, opset)
    with tempfile.TemporaryDirectory(prefix="pipnet-export-") as tmp:
        fp32 = export_onnx(graph, Path(tmp) / "fp32.onnx", opset)
        return quantize_onnx(fp32, out, crops)


# -- helpers -------------------------------------------------------------------------------------------
def _prepare_out(out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def require_module(module: str, purpose: str, extra: str) -> Any:
    """Import an optional dependency, or fail saying what needs it and how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed to {purpose}: pip install 'pipnet-lit[export]' (or: pip install {extra})"
        ) from err
