"""The crop cache: every reader's records cropped once into a folder, and read back by name.

Layout of one cached split (``cache_dir``)::

    images/<name>.png       lossless crops, input_size x input_size, BGR
    annotations.txt         "<name> x1 y1 ... xL yL" (normalized to the crop, full float precision);
                            "<name>" alone for unlabeled faces
    boxes.txt               "<name> x0 y0 w h": the crop's float box in source pixels (crop -> image frame)
    attributes.jsonl        per face {"name": ..., "attributes": {...}} (split filters read them)
    manifest.json           parameters, count, source fingerprint, skipped samples; written last

A second :func:`prepare_split` with the same records (names, image identities, raw landmarks and boxes, box
rule) and input size is a cache hit that reads no pixels; anything else rebuilds. Text files and the
manifest are written atomically, the manifest last, so an interrupted build is never a cache hit.
Cropping runs on a thread pool (OpenCV releases the GIL while decoding, resizing and encoding).

The official code re-encodes crops with the source extension (JPEG for most images); we keep PNG crops, so
we do not reproduce that second JPEG loss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipnet_lit.datasets.geometry import crop_and_resize
from pipnet_lit.datasets.records import BadInput, DataFormatError, FaceRecord, read_text_lines
from pipnet_lit.faults import kill_point
from pipnet_lit.files import (
    atomic_write_bytes,
    atomic_write_text,
    flush_all,
    read_json_object,
    write_json_atomic,
)

__all__ = [
    "CACHE_VERSION",
    "CachedSplit",
    "atomic_write_text",
    "exclusive_lock",
    "format_annotation_line",
    "manifest_matches",
    "prepare_split",
    "read_annotations",
    "read_manifest",
    "read_split",
    "write_manifest",
]

# Bump when the crop arithmetic or the cache layout changes: every cache is then rebuilt.
CACHE_VERSION = 2
ANNOTATIONS_NAME = "annotations.txt"
BOXES_NAME = "boxes.txt"
ATTRIBUTES_NAME = "attributes.jsonl"
MANIFEST_NAME = "manifest.json"
IMAGES_DIRNAME = "images"
# Crops are written as stored (uncompressed) PNG without row filters: decoding one then costs a quarter of a
# default cv2 PNG (about 0.4 vs 1.7 ms for a 256 px crop of a photo), which is most of a training worker's
# budget; the price is disk (3 bytes a pixel: 197 KB a 256 px crop, about 1.5x a default PNG of a photo).
# Pixels are the same either way (PNG is lossless), so caches written with other settings stay valid.
PNG_WRITE_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, 0, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE)


log = logging.getLogger(__name__)


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block.

    Jobs that share a data folder (a multirun, SLURM array jobs, DDP ranks) take turns: the first one
    renders and crops, the others wait and then find the cache complete. POSIX ``flock``; elsewhere no lock.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; crop the data once before starting parallel jobs
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"waiting for another job to finish preparing {what or path.parent} (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- manifests (also used by the synthetic generator, pseudo-labels and self-training rounds) -------------
#: Write a JSON manifest atomically (write it last: its presence marks the folder complete).
write_manifest = write_json_atomic
#: The manifest at ``path``, or None when it is missing or unreadable.
read_manifest = read_json_object


def manifest_matches(path: str | os.PathLike[str], expected: dict[str, Any], keys: Sequence[str]) -> bool:
    """Whether the manifest at ``path`` exists and agrees with ``expected`` on ``keys``."""
    found = read_manifest(path)
    return found is not None and all(found.get(k) == expected.get(k) for k in keys)


# -- annotation lines ----------------------------------------------------------------------------------------
def format_annotation_line(name: str, landmarks: np.ndarray | None) -> str:
    """``"<name> x1 y1 ... xL yL"`` with every float at full precision (``repr``), or the name alone."""
    if landmarks is None:
        return name
    return (
        name + " " + " ".join(repr(v) for v in np.asarray(landmarks, dtype=np.float64).reshape(-1).tolist())
    )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_annotations(
    path: str | os.PathLike[str], allow_unlabeled: bool = False, *, unique_hint: str | None = None
) -> list[tuple[str, np.ndarray | None]]:
    """Read an annotation file: ``<name> x1 y1 ... xL yL`` lines -> [(name, (L, 2) float64)].

    Blank lines are skipped; every labeled line must have the same L. With ``allow_unlabeled`` a line may
    hold the name alone (landmarks None). With ``unique_hint`` a name on two lines is an error (checked
    before any line is parsed; the hint says what to do). Errors name the file and the 1-based line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    lines = read_text_lines(path, keepends=False)
    if unique_hint is not None:
        first_line: dict[str, int] = {}
        for line_no, line in enumerate(lines, start=1):
            tokens = line.split()
            if tokens and tokens[0] in first_line:
                raise DataFormatError(
                    f"{path}:{line_no}: a second line for crop {tokens[0]!r} (first on line "
                    f"{first_line[tokens[0]]}); {unique_hint}"
                )
            if tokens:
                first_line[tokens[0]] = line_no
    out: list[tuple[str, np.ndarray | None]] = []
    num = None
    for line_no, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        name, values = tokens[0], tokens[1:]
        if not values and allow_unlabeled:
            out.append((name, None))
            continue
        if not values or len(values) % 2:
            raise DataFormatError(
                f"{path}:{line_no}: expected '<name> x1 y1 ... xL yL' (an even, non-zero count of numbers), "
                f"found {len(values)} values after {name!r}"
            )
        try:
            coords = np.array([float(v) for v in values], dtype=np.float64).reshape(-1, 2)
        except ValueError:
            bad = next(v for v in values if not _is_float(v))
            raise DataFormatError(f"{path}:{line_no}: non-numeric coordinate {bad!r} for {name!r}") from None
        if not np.isfinite(coords).all():
            raise DataFormatError(f"{path}:{line_no}: NaN or inf coordinate for {name!r}")
        if num is None:
            num = len(coords)
        elif len(coords) != num:
            raise DataFormatError(
                f"{path}:{line_no}: {len(coords)} landmarks for {name!r}, but earlier lines have {num}"
            )
        out.append((name, coords))
    return out


# -- building a cache ----------------------------------------------------------------------------------------
def _fingerprint(records: Sequence[FaceRecord]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.fingerprint().encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _crop_one(
    record: FaceRecord, images_dir: Path, input_size: int
) -> tuple[str, np.ndarray | None, tuple[float, ...], str | None]:
    """Crop one record; returns (name, normalized landmarks, box xywh, error message or None)."""
    try:
        image = record.image.load()
        h, w = image.shape[:2]
        box, landmarks = record.rule.apply(record.points, record.box, w, h)
        box.check()
        crop = crop_and_resize(image, box, input_size)
    except (DataFormatError, ValueError, OSError, cv2.error) as err:
        where = record.source or record.image.describe()
        text = str(err)
        return record.name, None, (), text if text.startswith(where) else f"{where}: {text}"
    if landmarks is not None and not np.isfinite(landmarks).all():
        return record.name, None, (), f"{record.source or record.image.describe()}: non-finite landmarks"
    ok, png = cv2.imencode(".png", crop, list(PNG_WRITE_PARAMS))
    if not ok:
        raise OSError(f"could not encode crop {images_dir / record.name}.png")
    # atomic against a kill; flushed once for the whole split before the manifest (OSError: disk full)
    atomic_write_bytes(images_dir / f"{record.name}.png", png.tobytes(), durable=False)
    return record.name, landmarks, tuple(float(v) for v in box.xywh()), None


def prepare_split(
    records: Sequence[FaceRecord],
    cache_dir: str | os.PathLike[str],
    input_size: int,
    *,
    bad: BadInput | None = None,
    description: str = "",
    params: dict[str, Any] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Crop ``records`` into ``cache_dir`` (see the module docstring) unless it already holds them.

    Args:
        records: the split's faces, in order (the cache keeps that order).
        cache_dir: one folder per split.
        input_size: side of the square crops, in pixels.
        bad: what to do with a record whose image cannot be read or whose box is empty (default: raise).
        description: shown on the progress bar and stored in the manifest.
        params: extra facts stored in the manifest (they do not affect the cache key).
        workers: cropping threads (default: every core).

    Returns:
        ``cache_dir``.
    """
    cache_dir = Path(cache_dir)
    bad = bad or BadInput("raise")
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))
        raise DataFormatError(f"two faces of {description or cache_dir} share the crop name {dup!r}")
    key = {
        "cache_version": CACHE_VERSION,
        "input_size": int(input_size),
        "count_in": len(records),
        "source_fingerprint": _fingerprint(records),
    }
    manifest_path = cache_dir / MANIFEST_NAME
    images_dir = cache_dir / IMAGES_DIRNAME
    old = read_manifest(manifest_path)
    texts = (ANNOTATIONS_NAME, BOXES_NAME, ATTRIBUTES_NAME)
    if (
        old is not None
        and all(old.get(k) == v for k, v in key.items())
        and all((cache_dir / t).is_file() for t in texts)
    ):
        skipped_before = set(old.get("names_skipped", []))
        if all((images_dir / f"{n}.png").is_file() for n in names if n not in skipped_before):
            for message in old.get("skipped", []):
                bad(message)
            return cache_dir

    images_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    results = []
    workers = max(1, workers or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(lambda r: _crop_one(r, images_dir, input_size), records)
        if progress and len(records) >= 50:
            from rich.progress import track

            jobs = track(jobs, total=len(records), description=f"cropping {description or cache_dir.name}")
        for result in jobs:
            results.append(result)
            if len(results) == max(1, len(records) // 2):
                kill_point("prepare")  # half the crops written, no annotations, no manifest
    lines, box_lines, attr_lines, skipped, skipped_names = [], [], [], [], []
    for record, (name, landmarks, box, error) in zip(records, results, strict=True):
        if error is not None:
            skipped.append(error)
            skipped_names.append(name)
            bad(error)
            continue
        lines.append(format_annotation_line(name, landmarks))
        box_lines.append(name + " " + " ".join(repr(v) for v in box))
        attr_lines.append(
            json.dumps({"name": name, "attributes": _jsonable(record.attributes)}, sort_keys=True)
        )
    keep = {f"{n}.png" for n in names} - {f"{n}.png" for n in skipped_names}
    for stale in images_dir.iterdir():
        if stale.name not in keep:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    labeled = [r.points is not None for r in records]
    flush_all()  # the crops are on disk before the files that say the split is complete
    atomic_write_text(cache_dir / ANNOTATIONS_NAME, "".join(f"{line}\n" for line in lines))
    atomic_write_text(cache_dir / BOXES_NAME, "".join(f"{line}\n" for line in box_lines))
    atomic_write_text(cache_dir / ATTRIBUTES_NAME, "".join(f"{line}\n" for line in attr_lines))
    manifest = {
        **key,
        "description": description,
        "count": len(lines),
        "labeled": bool(any(labeled)),
        "skipped": skipped,
        "names_skipped": skipped_names,
        "params": _jsonable(params or {}),
    }
    write_manifest(manifest_path, manifest)
    return cache_dir


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return value.as_posix()
    return value


# -- reading a cache -----------------------------------------------------------------------------------------
@dataclass
class CachedSplit:
    """A prepared split: crop paths, names, landmarks (N, L, 2) normalized (None: unlabeled),
    ``boxes_xywh`` (N, 4) float64 ``[x0, y0, w, h]`` crop boxes in source pixels, attributes per face."""

    cache_dir: Path
    names: list[str]
    image_paths: list[Path]
    landmarks: np.ndarray | None
    boxes_xywh: np.ndarray
    attributes: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def boxes(self) -> np.ndarray:
        """Deprecated name of `boxes_xywh` (kept for one release)."""
        return self.boxes_xywh

    def select(self, indices: Sequence[int] | np.ndarray) -> CachedSplit:
        """The faces at ``indices`` (0-based positions), in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return CachedSplit(
            self.cache_dir,
            [self.names[i] for i in idx],
            [self.image_paths[i] for i in idx],
            None if self.landmarks is None else self.landmarks[idx],
            self.boxes_xywh[idx],
            [self.attributes[i] for i in idx],
        )


def read_split(cache_dir: str | os.PathLike[str]) -> CachedSplit:
    """Read a cache written by :func:`prepare_split`."""
    cache_dir = Path(cache_dir)
    manifest = read_manifest(cache_dir / MANIFEST_NAME)
    if manifest is None:
        raise FileNotFoundError(
            f"{cache_dir} is not a prepared crop cache (no readable {MANIFEST_NAME}); run prepare_data first"
        )
    entries = read_annotations(cache_dir / ANNOTATIONS_NAME, allow_unlabeled=True)
    names = [name for name, _ in entries]
    boxes = _read_boxes(cache_dir / BOXES_NAME)
    missing = [n for n in names if n not in boxes]
    if missing or len(boxes) != len(names):
        raise DataFormatError(
            f"{cache_dir / BOXES_NAME} does not match {ANNOTATIONS_NAME} (e.g. no box for {missing[:1]}); "
            f"delete {cache_dir} to rebuild the cache"
        )
    attributes = _read_attributes(cache_dir / ATTRIBUTES_NAME, names)
    labeled = [lms is not None for _, lms in entries]
    if any(labeled) and not all(labeled):
        first = labeled.index(False) if any(labeled) else 0
        raise DataFormatError(
            f"{cache_dir / ANNOTATIONS_NAME}: mixes labeled and unlabeled lines ({names[first]})"
        )
    if entries and all(labeled):
        landmarks = np.stack([lms for _, lms in entries])
    elif not entries and manifest.get("labeled", True):
        landmarks = np.zeros((0, 0, 2))
    else:
        landmarks = None
    return CachedSplit(
        cache_dir,
        names,
        [cache_dir / IMAGES_DIRNAME / f"{n}.png" for n in names],
        landmarks,
        np.array([boxes[n] for n in names], dtype=np.float64).reshape(-1, 4),
        attributes,
    )


def _read_boxes(path: Path) -> dict[str, list[float]]:
    boxes = {}
    for line_no, line in enumerate(read_text_lines(path, keepends=False), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 5 or not all(_is_float(t) for t in tokens[1:]):
            raise DataFormatError(f"{path}:{line_no}: expected '<name> x0 y0 w h', found {line!r}")
        box = [float(t) for t in tokens[1:]]
        if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
            raise DataFormatError(
                f"{path}:{line_no}: the box of {tokens[0]!r} must be finite with a positive size, found "
                f"{line!r}; delete the cache folder to rebuild it"
            )
        boxes[tokens[0]] = box
    return boxes


def _read_attributes(path: Path, names: list[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        return [{} for _ in names]
    by_name = {}
    for line_no, line in enumerate(read_text_lines(path, keepends=False), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(
                f"{path}:{line_no}: not a JSON object ({err}); delete the cache folder"
            ) from None
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("attributes", {}), dict)
        ):
            raise DataFormatError(
                f'{path}:{line_no}: expected {{"name": <crop name>, "attributes": {{...}}}}, found '
                f"{line[:80]!r}; delete the cache folder"
            )
        by_name[item["name"]] = item.get("attributes", {})
    return [by_name.get(n, {}) for n in names]
