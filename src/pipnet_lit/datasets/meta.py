"""Dataset facts as data: landmark schemes and benchmark descriptions, read from small YAML files.

Built-in files live in `pipnet_lit/datasets/meta/`; a path to a user's own YAML works the same way, so a
custom landmark set needs no code. Every index is 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

META_DIR = Path(__file__).parent / "meta"


class MetaError(ValueError):
    """A landmark-scheme or dataset description is missing or malformed."""


@dataclass(frozen=True)
class LandmarkScheme:
    """A landmark set: count, named groups, flip permutation, NME normalizations."""

    name: str
    num_landmarks: int
    flip_permutation: tuple[int, ...]
    norms: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)

    def norm_indices(self, norm: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The two index groups whose centres define normalization `norm` (e.g. 'inter_ocular')."""
        if norm not in self.norms:
            raise MetaError(
                f"landmark scheme {self.name!r} defines no {norm!r} normalization; "
                f"it has {sorted(self.norms)} (add it under 'norms:' in its YAML)"
            )
        return self.norms[norm]


@dataclass(frozen=True)
class DatasetMeta:
    """A benchmark: its landmark scheme, default NME norm, crop factor and named splits.

    `test_splits` maps a subset name (e.g. 'common') to the folders it is made of.
    """

    name: str
    landmarks: LandmarkScheme
    default_norm: str
    crop_scale: float
    train_folders: tuple[str, ...]
    test_splits: dict[str, tuple[str, ...]]
    unlabeled_folders: tuple[str, ...] = ()


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise MetaError(f"metadata file {path} does not exist")
        return path
    candidate = META_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in META_DIR.glob("*.yaml"))
        raise MetaError(f"no built-in metadata named {name_or_path!r}; known: {known}, or pass a .yaml path")
    return candidate


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise MetaError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise MetaError(f"{path}: expected a mapping at the top level")
    return data


def _require(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise MetaError(f"{path}: missing key {key!r}")
    return data[key]


@cache
def load_landmark_scheme(name_or_path: str) -> LandmarkScheme:
    """Load and validate a landmark scheme (built-in name such as 'ibug68', or a YAML path)."""
    path = _resolve(name_or_path)
    try:
        return _parse_scheme(_read(path), path)
    except (TypeError, ValueError, IndexError, AttributeError) as err:
        if isinstance(err, MetaError):
            raise
        raise MetaError(
            f"{path}: malformed landmark scheme ({err}); see pipnet_lit/datasets/meta/ibug68.yaml"
        ) from err


def _parse_scheme(data: dict[str, Any], path: Path) -> LandmarkScheme:
    n = int(_require(data, "num_landmarks", path))
    perm = tuple(int(i) for i in _require(data, "flip_permutation", path))
    if sorted(perm) != list(range(n)):
        raise MetaError(f"{path}: flip_permutation must be a permutation of 0..{n - 1} ({len(perm)} entries)")
    if any(perm[perm[k]] != k for k in range(n)):
        raise MetaError(
            f"{path}: flip_permutation must pair landmarks (applying it twice must give identity)"
        )
    norms = {}
    for key, pair in (data.get("norms") or {}).items():
        if len(pair) != 2 or not all(0 <= int(i) < n for group in pair for i in group):
            raise MetaError(f"{path}: norms.{key} must be two lists of indices in 0..{n - 1}")
        norms[key] = (tuple(int(i) for i in pair[0]), tuple(int(i) for i in pair[1]))
    groups = {k: (int(v[0]), int(v[1])) for k, v in (data.get("groups") or {}).items()}
    return LandmarkScheme(str(data.get("name", path.stem)), n, perm, norms, groups)


@cache
def load_dataset_meta(name_or_path: str) -> DatasetMeta:
    """Load a benchmark description (built-in name such as '300w' or 'synthetic', or a YAML path).

    Its `landmarks:` names a built-in scheme or a YAML path, relative paths taken from the file's folder.
    """
    path = _resolve(name_or_path)
    data = _read(path)
    scheme_ref = str(_require(data, "landmarks", path))
    if Path(scheme_ref).suffix in (".yaml", ".yml") and not Path(scheme_ref).is_absolute():
        scheme_ref = str(path.parent / scheme_ref)
    scheme = load_landmark_scheme(scheme_ref)
    try:
        return _parse_dataset(data, path, scheme)
    except (TypeError, ValueError, AttributeError) as err:
        if isinstance(err, MetaError):
            raise
        raise MetaError(
            f"{path}: malformed dataset description ({err}); see pipnet_lit/datasets/meta/300w.yaml"
        ) from err


def _parse_dataset(data: dict[str, Any], path: Path, scheme: LandmarkScheme) -> DatasetMeta:
    splits = _require(data, "splits", path)
    train = tuple(_require(splits, "train", path))
    tests = {str(k): tuple(v) for k, v in (_require(splits, "test", path) or {}).items()}
    default_norm = str(data.get("default_norm", "inter_ocular"))
    if default_norm in ("inter_ocular", "inter_pupil"):
        scheme.norm_indices(default_norm)  # the scheme must say which landmarks define it
    return DatasetMeta(
        name=str(data.get("name", path.stem)),
        landmarks=scheme,
        default_norm=default_norm,
        crop_scale=float(data.get("crop_scale", 1.1)),
        train_folders=train,
        test_splits=tests,
        unlabeled_folders=tuple(data.get("unlabeled") or ()),
    )
