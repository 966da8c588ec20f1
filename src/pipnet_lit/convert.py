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

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipnet_lit.inference import Predictor, describe_official_weights, load_official_weights

__all__ = ["ConvertConfig", "convert", "main"]


@dataclass
class ConvertConfig:
    """Options of ``python -m pipnet_lit.convert`` (see the module docstring)."""

    official: str = MISSING
    meanface: str = MISSING
    data: str = MISSING
    out: str = MISSING
    backbone: str | None = None
    net_stride: int | None = None
    num_nb: int | None = None
    input_size: int = 256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    predictor = Predictor.from_official(
        state,
        meanface,
        backbone=str(settings["backbone"]),
        num_landmarks=num_landmarks,
        num_nb=int(settings["num_nb"]),
        net_stride=int(settings["net_stride"]),
        input_size=int(input_size),
        name=str(official),
    )
    return predictor.save(
        out,
        dataset=meta.name,
        converted_from=Path(official).name,
        official_sha256=_sha256(Path(official)),
        meanface_file=Path(meanface).name,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 written, 1 bad input, 2 bad options)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    bad = [a for a in args if "=" not in a]
    try:
        if bad:
            raise ValueError(f"arguments must be key=value, got {bad}")
        cfg = OmegaConf.merge(OmegaConf.structured(ConvertConfig), OmegaConf.from_dotlist(args))
        missing = [k for k in ("official", "meanface", "data", "out") if OmegaConf.is_missing(cfg, k)]
        if missing:
            raise ValueError(f"missing {', '.join(f'{k}=...' for k in missing)}")
    except (ValueError, OmegaConfBaseException) as err:
        print(f"error: {str(err).splitlines()[0]}\n(python -m pipnet_lit.convert --help)", file=sys.stderr)
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
