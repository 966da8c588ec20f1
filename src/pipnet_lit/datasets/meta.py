"""Dataset facts as data: landmark schemes and benchmark descriptions, read from small YAML files.

Built-in files live in `pipnet_lit/datasets/descriptions/`; a path to a user's own YAML works the same way, so
a custom landmark set needs no code. Every index is 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

META_DIR = Path(__file__).parent / "descriptions"


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


#: NME normalizations a dataset YAML may name under ``metrics:``. Scheme norms use the scheme's index
#: groups; ``none``/``bbox``/``diag`` work on normalized crop coordinates; ``box_*`` on pixels of the
#: crop box.
SCHEME_NORMS = ("inter_ocular", "inter_pupil")
CROP_NORMS = ("none", "bbox", "diag")
BOX_NORMS = ("box_diag", "box_sqrt_area", "box_long_side")
METRIC_NORMS = SCHEME_NORMS + CROP_NORMS + BOX_NORMS


@dataclass(frozen=True)
class MetricSpec:
    """One NME: its metric key (``nme_io``), normalization, and index groups for scheme norms."""

    key: str
    norm: str
    indices: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def as_dict(self) -> dict[str, Any]:
        groups = None if self.indices is None else [list(g) for g in self.indices]
        return {"key": self.key, "norm": self.norm, "indices": groups}


@dataclass(frozen=True)
class SplitSpec:
    """A named set of faces: read by reader ``format`` from ``data.root / dir`` with keyword ``args``."""

    name: str
    format: str
    dir: str
    args: dict[str, Any]


@dataclass(frozen=True)
class SubsetSpec:
    """An evaluation subset: a split, optionally narrowed by attribute values or 0-based positions."""

    name: str
    split: str
    where: dict[str, tuple[Any, ...]] | None = None
    indices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DatasetMeta:
    """A benchmark (or a composition of several downloads): its landmark scheme, metrics, splits and roles.

    Roles: ``train`` (labeled training splits), ``test`` (evaluation subsets by name), ``unlabeled`` (splits
    whose landmarks are not used: the self-training pool). See ``meta/300w.yaml`` for the schema.
    """

    name: str
    landmarks: LandmarkScheme
    metrics: tuple[MetricSpec, ...]
    splits: dict[str, SplitSpec]
    train: tuple[str, ...]
    test: dict[str, SubsetSpec]
    unlabeled: tuple[str, ...] = ()
    download: str = ""
    layout: str = ""
    path: Path | None = None

    @property
    def default_norm(self) -> str:
        """The primary metric's normalization (the first under ``metrics:``)."""
        return self.metrics[0].norm

    @property
    def test_subsets(self) -> list[str]:
        return list(self.test)

    def dirs(self) -> list[str]:
        """The download folders this dataset reads, under ``data.root``."""
        return sorted({s.dir for s in self.splits.values()})


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
            f"{path}: malformed landmark scheme ({err}); see pipnet_lit/datasets/descriptions/ibug68.yaml"
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
            f"{path}: malformed dataset description ({err}); see pipnet_lit/datasets/descriptions/300w.yaml"
        ) from err


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def _parse_metrics(data: dict[str, Any], path: Path, scheme: LandmarkScheme) -> tuple[MetricSpec, ...]:
    raw = data.get("metrics") or {"nme_io": "inter_ocular"}
    if not isinstance(raw, dict):
        raise MetaError(f"{path}: 'metrics' must map metric keys (e.g. nme_io) to normalizations")
    specs = []
    for key, norm in raw.items():
        if norm not in METRIC_NORMS:
            raise MetaError(
                f"{path}: metrics.{key}: unknown normalization {norm!r}; choose from {METRIC_NORMS}"
            )
        if not str(key).startswith("nme_"):
            raise MetaError(f"{path}: metrics.{key}: metric keys start with 'nme_' (e.g. nme_io, nme_box)")
        indices = scheme.norm_indices(norm) if norm in SCHEME_NORMS else None
        specs.append(MetricSpec(str(key), str(norm), indices))
    return tuple(specs)


def _parse_split(name: str, raw: Any, data: dict[str, Any], path: Path) -> SplitSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise MetaError(f"{path}: splits.{name} must be a mapping of reader arguments")
    args = dict(raw)
    fmt = args.pop("format", data.get("format"))
    folder = args.pop("dir", data.get("dir", "."))
    if not fmt:
        raise MetaError(f"{path}: splits.{name} has no 'format' (set 'format:' at the top or in the split)")
    from pipnet_lit.datasets.readers import known_formats

    if fmt not in known_formats():
        raise MetaError(f"{path}: splits.{name}: unknown format {fmt!r}; known: {known_formats()}")
    return SplitSpec(name, str(fmt), str(folder), args)


def _parse_subset(name: str, raw: Any, splits: dict[str, SplitSpec], path: Path) -> SubsetSpec:
    if isinstance(raw, str):
        raw = {"split": raw}
    if not isinstance(raw, dict) or "split" not in raw:
        raise MetaError(
            f"{path}: test.{name} must name a split, or be {{split: ..., where: ..., indices: ...}}"
        )
    split = str(raw["split"])
    if split not in splits:
        raise MetaError(f"{path}: test.{name} uses split {split!r}, which 'splits:' does not define")
    unknown = set(raw) - {"split", "where", "indices"}
    if unknown:
        raise MetaError(f"{path}: test.{name}: unknown key(s) {sorted(unknown)} (split, where, indices)")
    where = raw.get("where")
    if where is not None:
        if not isinstance(where, dict):
            raise MetaError(f"{path}: test.{name}.where must map attribute names to values")
        where = {str(k): _as_tuple(v) for k, v in where.items()}
    indices = raw.get("indices")
    if indices is not None:
        indices = tuple(int(i) for i in indices)
        if any(i < 0 for i in indices):
            raise MetaError(f"{path}: test.{name}.indices must be 0-based positions (>= 0)")
    return SubsetSpec(name, split, where, indices)


def _parse_dataset(data: dict[str, Any], path: Path, scheme: LandmarkScheme) -> DatasetMeta:
    raw_splits = _require(data, "splits", path)
    if not isinstance(raw_splits, dict) or not raw_splits:
        raise MetaError(f"{path}: 'splits' must map split names to reader arguments")
    splits = {str(k): _parse_split(str(k), v, data, path) for k, v in raw_splits.items()}
    roles = {}
    for role in ("train", "unlabeled"):
        names = tuple(str(s) for s in _as_tuple(data.get(role)))
        for split in names:
            if split not in splits:
                raise MetaError(f"{path}: {role}: split {split!r} is not defined under 'splits:'")
        roles[role] = names
    test = {str(k): _parse_subset(str(k), v, splits, path) for k, v in (data.get("test") or {}).items()}
    return DatasetMeta(
        name=str(data.get("name", path.stem)),
        landmarks=scheme,
        metrics=_parse_metrics(data, path, scheme),
        splits=splits,
        train=roles["train"],
        test=test,
        unlabeled=roles["unlabeled"],
        download=str(data.get("download", "")),
        layout=str(data.get("layout", "")),
        path=path,
    )
