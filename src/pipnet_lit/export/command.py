"""The export command: ``python -m pipnet_lit.export`` / ``pipnet-export`` (see `pipnet_lit.export`).

The export library (`pipnet_lit.export`) needs neither Lightning nor Hydra. This command adds what only a
command line needs: reading a checkpoint, and calibration crops from a *data config* (``calibrate=synthetic
data.root=...``), whose training split is composed with Hydra and prepared by the data module exactly as
for training. It is the one deployment module that imports the training stack, and only to resolve that
option.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

import pipnet_lit.export as export_library
from pipnet_lit.checkpoints import read_checkpoint
from pipnet_lit.cli import Command, option
from pipnet_lit.export import (
    FORMATS,
    ONNX_OPSET,
    SUFFIXES,
    crop_image_paths,
    export_graph,
    sample_calibration_crops,
)


def training_crop_paths(name: str, input_size: int, data_overrides: Sequence[str] = ()) -> list[Path]:
    """The cached training crops of data config ``name`` (``data/<name>.yaml`` with ``data.*`` overrides),
    prepared (read and cropped) first if needed, as for training."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from pipnet_lit.config import CONFIG_DIR, check_config_dir

    available = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml") if p.stem != "base")
    if name not in available:
        raise ValueError(
            f"calibrate={name}: neither a folder of crops nor a data config; data configs: {available}"
        )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=check_config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data={name}", *data_overrides])
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.root_dir = os.environ.get("PIPNET_ROOT", os.getcwd())
    datamodule = instantiate(cfg.data, input_size=input_size, load_unlabeled=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return list(datamodule.train_set.image_paths)


def calibration_crops(
    source: str | Path,
    input_size: int,
    n: int = 100,
    seed: int = 0,
    data_overrides: Sequence[str] = (),
) -> Tensor:
    """`n` crops (N, 3, S, S) drawn (seeded, without replacement) for int8 calibration.

    source: a folder of face crops (searched recursively for images), or the name of a data config
        (`synthetic`, `300w`, ... in the config folder's `data/` group; `data_overrides` such as
        `data.root=/data` apply), whose training split is prepared (cropped and cached as for training) and
        read without augmentation.
    """
    if n < 1:
        raise ValueError(f"n={n}: calibrate on at least one crop (about 100 is plenty)")
    folder = Path(source)
    if folder.is_dir():
        paths = crop_image_paths(folder)
    else:
        paths = training_crop_paths(str(source), input_size, data_overrides)
    return sample_calibration_crops(paths, input_size, n, seed)


def default_out(ckpt: str | Path, fmt: str, quantize: str | None) -> Path:
    """`<ckpt stem>[_int8].<onnx|pt|xml>` beside the checkpoint."""
    ckpt = Path(ckpt)
    stem = ckpt.stem + ("_int8" if quantize else "")
    return ckpt.with_name(stem + SUFFIXES[fmt])


def export(
    ckpt: str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    quantize: str | None = None,
    calibrate: str | Path | None = None,
    n: int = 100,
    seed: int = 0,
    data_overrides: Sequence[str] = (),
    opset: int = ONNX_OPSET,
) -> Path:
    """Export checkpoint `ckpt` to `format`, optionally quantized to int8; returns the written file."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: choose one of {', '.join(FORMATS)}")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize={quantize!r}: only int8 (or leave it out for fp32)")
    if quantize and format == "torchscript":
        raise ValueError("quantize=int8 is for format=onnx (ONNX Runtime) or format=openvino")
    if quantize and calibrate is None:
        raise ValueError(
            "quantize=int8 needs calibration crops: calibrate=<data config, e.g. synthetic> or "
            "calibrate=<folder of face crops> (and n=100)"
        )
    graph = read_checkpoint(ckpt).graph()
    out = Path(out) if out is not None else default_out(ckpt, format, quantize)
    crops = calibration_crops(calibrate, graph.input_size, n, seed, data_overrides) if quantize else None
    return export_graph(graph, format, out, crops, opset)


@dataclass
class ExportOptions:
    """Options of ``python -m pipnet_lit.export`` (see `pipnet_lit.export`)."""

    ckpt: str = option(help="a pipnet-lit checkpoint (training's *.ckpt, or pipnet_lit.convert's output)")
    format: Literal["onnx", "torchscript", "openvino"] = option("onnx", help="the exported file's format")
    out: str | None = option(None, help="the file to write (default: <ckpt stem>[_int8].<onnx|pt|xml>)")
    quantize: Literal["int8"] | None = option(None, help="int8: post-training static quantization")
    calibrate: str | None = option(None, help="int8 calibration crops: a data config name or a crop folder")
    n: int = option(100, help="calibration crops to draw")
    seed: int = option(0, help="seed of the calibration draw")
    opset: int = option(ONNX_OPSET, help="ONNX opset")
    data_overrides: list[str] = option(passthrough=("data.", "+data."), help="overrides of the data config")


COMMAND = Command(
    ExportOptions, prog="python -m pipnet_lit.export", doc=export_library.__doc__, style="key=value"
)


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """The command line -> `export` keyword arguments (`pipnet_lit.cli.UsageError` on a bad one)."""
    return dataclasses.asdict(COMMAND.parse(argv))


def main(argv: Sequence[str] | None = None) -> Path:
    """Export, print the written file and return it; bad options exit with code 2 and a message."""
    options = COMMAND.parse_or_exit(sys.argv[1:] if argv is None else list(argv))
    try:
        path = export(**dataclasses.asdict(options))
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"{COMMAND.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"wrote {path}")
    return path
