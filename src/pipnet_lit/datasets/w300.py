"""300W on disk: folder listing, the official PIPNet face crop, and a cached crop + annotation file.

The crop reproduces the official ``lib/preprocess.py`` (``process_300w``) exactly:

* ``.pts`` coordinates (1-based pixels, used as is) are truncated toward zero, ``int(float(x))``;
* box = min/max of those integers; ``xmin -= int((scale - 1) / 2 * w)`` (float product, then truncation),
  ``w = int(w * scale)``, ``xmin = max(xmin, 0)``, ``w = min(w, W - xmin - 1)``; the same for y;
* crop = ``image[ymin:ymin + h, xmin:xmin + w]`` resized to ``input_size`` with ``cv2.resize`` (bilinear,
  aspect not kept); landmarks = (p_int - (xmin, ymin)) / (w, h), **not** clipped to [0, 1].

Official quirk kept as the default: the normalized landmarks are computed from the *truncated* integer
coordinates, so they lose the sub-pixel part of the annotation. ``subpixel=True`` normalizes the float
coordinates instead (same box and pixels); it is not the paper's protocol.

Our cache writes crops as PNG (lossless); the official code re-encodes them with the source extension
(JPEG for most 300W images), which adds a second JPEG loss that we do not reproduce.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from pipnet_lit.datasets.pts import read_pts

__all__ = [
    "CACHE_VERSION",
    "IMAGE_SUFFIXES",
    "crop_box_300w",
    "crop_300w",
    "list_300w_folder",
    "load_image_bgr",
    "load_prepared_split",
    "prepare_300w_split",
    "read_annotations",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Bump when the crop arithmetic or the cache layout changes: every cache is then rebuilt.
CACHE_VERSION = 1
ANNOTATIONS_NAME = "annotations.txt"
BOXES_NAME = "boxes.txt"
MANIFEST_NAME = "manifest.json"
IMAGES_DIRNAME = "images"

_LAYOUT_HINT = (
    "the 300W root is expected to hold the folders afw, helen/trainset, helen/testset, lfpw/trainset, "
    "lfpw/testset and ibug, each with images (.jpg/.png) next to iBUG .pts files of the same stem"
)


def crop_box_300w(
    points_int: np.ndarray, image_w: int, image_h: int, scale: float = 1.1
) -> tuple[int, int, int, int]:
    """Official 300W face box from (L, 2) landmarks, as integers ``(xmin, ymin, w, h)``.

    ``points_int`` are the ``.pts`` values truncated toward zero (``int(float(x))``); float input is
    truncated here the same way, so passing raw ``.pts`` coordinates gives the same box.
    """
    pts = np.asarray(points_int, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"crop_box_300w: points must have shape (L, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("crop_box_300w: points contain NaN or inf")
    ints = np.trunc(pts).astype(np.int64)
    # Python ints and floats below, so every product and truncation matches the official code bit for bit.
    xmin, ymin = int(ints[:, 0].min()), int(ints[:, 1].min())
    w = int(ints[:, 0].max()) - xmin
    h = int(ints[:, 1].max()) - ymin
    xmin -= int((scale - 1) / 2 * w)
    ymin -= int((scale - 1) / 2 * h)
    w = int(w * scale)
    h = int(h * scale)
    xmin = max(xmin, 0)
    ymin = max(ymin, 0)
    w = min(w, int(image_w) - xmin - 1)
    h = min(h, int(image_h) - ymin - 1)
    if w <= 0 or h <= 0:
        raise ValueError(
            f"crop_box_300w: empty face box (xmin={xmin}, ymin={ymin}, w={w}, h={h}) for a "
            f"{image_w}x{image_h} image; are the landmarks inside the image and in pixel units?"
        )
    return xmin, ymin, w, h


def crop_300w(
    image_bgr: np.ndarray,
    points: np.ndarray,
    input_size: int,
    scale: float = 1.1,
    subpixel: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Official 300W crop of one face.

    Args:
        image_bgr: (H, W, 3) uint8 BGR image.
        points: (L, 2) landmarks as read from the ``.pts`` (1-based pixels, used as is).
        input_size: side of the square output crop.
        scale: box enlargement (1.1 supervised, 1.3 in the GSSL sets).
        subpixel: normalize the float coordinates instead of the truncated ones (not the official protocol).

    Returns:
        crop (input_size, input_size, 3) uint8; landmarks (L, 2) float64 normalized to the box,
        ``(p - (xmin, ymin)) / (w, h)``, not clipped; box ``(xmin, ymin, w, h)`` in pixels.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"crop_300w: image must be (H, W, 3) uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}"
        )
    pts = np.asarray(points, dtype=np.float64)
    img_h, img_w = image_bgr.shape[:2]
    xmin, ymin, w, h = crop_box_300w(pts, img_w, img_h, scale)
    patch = image_bgr[ymin : ymin + h, xmin : xmin + w]
    crop = cv2.resize(patch, (int(input_size), int(input_size)), interpolation=cv2.INTER_LINEAR)
    src = pts if subpixel else np.trunc(pts)
    landmarks = (src - np.array([xmin, ymin], dtype=np.float64)) / np.array([w, h], dtype=np.float64)
    return crop, landmarks, (xmin, ymin, w, h)


def list_300w_folder(root: str | os.PathLike[str], folder: str) -> list[tuple[Path, Path]]:
    """Images of one 300W folder, each paired with the ``.pts`` of the same stem, sorted by image name.

    Images are ``.jpg``/``.jpeg``/``.png`` in any letter case; other files are ignored.
    """
    directory = Path(root) / folder
    if not directory.is_dir():
        raise FileNotFoundError(f"300W folder not found: {directory} ({_LAYOUT_HINT})")
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for entry in directory.iterdir():
        if not entry.is_file():
            continue
        suffix = entry.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            if entry.stem in images:
                raise ValueError(
                    f"two images share the stem {entry.stem!r}: {images[entry.stem]} and {entry}"
                )
            images[entry.stem] = entry
        elif suffix == ".pts":
            labels[entry.stem] = entry
    missing = sorted(stem for stem in images if stem not in labels)
    if missing:
        image = images[missing[0]]
        raise FileNotFoundError(
            f"image {image} has no landmark file {image.with_suffix('.pts').name} next to it "
            f"({len(missing)} image(s) without .pts in {directory})"
        )
    orphans = sorted(stem for stem in labels if stem not in images)
    if orphans:
        raise FileNotFoundError(
            f"landmark file {labels[orphans[0]]} has no image of the same stem (.jpg/.jpeg/.png) "
            f"({len(orphans)} .pts without image in {directory})"
        )
    if not images:
        raise FileNotFoundError(f"no images (.jpg/.jpeg/.png) in 300W folder {directory} ({_LAYOUT_HINT})")
    return [(images[stem], labels[stem]) for stem in sorted(images, key=lambda s: images[s].name)]


def load_image_bgr(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 BGR with ``cv2.imread`` (grayscale files become 3-channel)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"could not decode image {path} (not a readable image file?)")
    return image


def _crop_name(folder: str, image_path: Path) -> str:
    return folder.strip("/").replace("/", "_") + "_" + image_path.stem + ".png"


def _source_fingerprint(pairs: Sequence[tuple[str, Path, Path]], root: Path) -> str:
    """Hash of every image's relative path and size and every ``.pts`` file's path and content."""
    digest = hashlib.sha256()
    for _folder, image_path, pts_path in pairs:
        digest.update(f"{image_path.relative_to(root).as_posix()}\0{image_path.stat().st_size}\n".encode())
        digest.update(f"{pts_path.relative_to(root).as_posix()}\0".encode() + pts_path.read_bytes())
    return digest.hexdigest()


def _format_line(name: str, landmarks: np.ndarray) -> str:
    return name + " " + " ".join(repr(v) for v in landmarks.reshape(-1).tolist())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)


def prepare_300w_split(
    root: str | os.PathLike[str],
    folders: Sequence[str],
    cache_dir: str | os.PathLike[str],
    input_size: int,
    scale: float = 1.1,
    *,
    subpixel: bool = False,
    progress: bool = True,
) -> Path:
    """Crop every image of ``folders`` once into ``cache_dir`` and return its annotation file.

    Layout: ``cache_dir/images/<folder with '/' -> '_'>_<stem>.png`` (lossless PNG crops),
    ``cache_dir/annotations.txt`` (lines ``<crop name> x1 y1 ... xL yL``, normalized, full float
    precision), ``cache_dir/boxes.txt`` (lines ``<crop name> xmin ymin w h``: the crop box in the source
    image's pixels) and ``cache_dir/manifest.json``; :func:`load_prepared_split` reads them back.

    Use one ``cache_dir`` per split. A second call with the same source files (names, image sizes,
    ``.pts`` contents) and parameters is a cache hit that only lists the folders and hashes the ``.pts``
    files; anything different (parameters, files, :data:`CACHE_VERSION`) rebuilds. The text files and the
    manifest are written atomically, the manifest last, so an interrupted build is never a cache hit.
    """
    root = Path(root)
    cache_dir = Path(cache_dir)
    if not folders:
        raise ValueError("prepare_300w_split: no folders given")
    pairs = [(f, img, pts) for f in folders for img, pts in list_300w_folder(root, f)]
    names = [_crop_name(f, img) for f, img, _ in pairs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"prepare_300w_split: two images map to the same crop name {dup!r}")
    manifest = {
        "cache_version": CACHE_VERSION,
        "source_root": str(root.resolve()),
        "folders": list(folders),
        "input_size": int(input_size),
        "scale": float(scale),
        "subpixel": bool(subpixel),
        "count": len(pairs),
        "source_fingerprint": _source_fingerprint(pairs, root),
    }
    annotations = cache_dir / ANNOTATIONS_NAME
    boxes_path = cache_dir / BOXES_NAME
    manifest_path = cache_dir / MANIFEST_NAME
    images_dir = cache_dir / IMAGES_DIRNAME
    if manifest_path.is_file() and annotations.is_file() and boxes_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if old == manifest and all((images_dir / n).is_file() for n in names):
            return annotations

    images_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    lines = []
    box_lines = []
    iterator = zip(pairs, names, strict=True)
    if progress and len(pairs) >= 50:
        from rich.progress import track

        iterator = track(iterator, total=len(pairs), description=f"cropping {', '.join(folders)}")
    for (_folder, image_path, pts_path), name in iterator:
        points = read_pts(pts_path)
        try:
            crop, landmarks, box = crop_300w(load_image_bgr(image_path), points, input_size, scale, subpixel)
        except ValueError as err:
            raise ValueError(f"{image_path}: {err}") from None
        if not cv2.imwrite(str(images_dir / name), crop):
            raise OSError(f"could not write crop {images_dir / name}")
        lines.append(_format_line(name, landmarks))
        box_lines.append(f"{name} {box[0]} {box[1]} {box[2]} {box[3]}")
    keep = set(names)
    for stale in images_dir.iterdir():
        if stale.name not in keep and stale.is_file():
            stale.unlink()
        elif stale.is_dir():
            shutil.rmtree(stale)
    _atomic_write_text(annotations, "\n".join(lines) + "\n")
    _atomic_write_text(boxes_path, "\n".join(box_lines) + "\n")
    _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return annotations


def read_annotations(path: str | os.PathLike[str]) -> list[tuple[str, np.ndarray]]:
    """Read an annotation file: lines ``<name> x1 y1 ... xL yL`` -> list of (name, (L, 2) float64).

    Blank lines are skipped; every line must have the same L. Errors name the file and 1-based line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    out: list[tuple[str, np.ndarray]] = []
    num = None
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        name, values = tokens[0], tokens[1:]
        if not values or len(values) % 2:
            raise ValueError(
                f"{path}:{line_no}: expected '<name> x1 y1 ... xL yL' (an even, non-zero count of numbers), "
                f"found {len(values)} values after {name!r}"
            )
        try:
            coords = np.array([float(v) for v in values], dtype=np.float64).reshape(-1, 2)
        except ValueError:
            bad = next(v for v in values if not _is_float(v))
            raise ValueError(f"{path}:{line_no}: non-numeric coordinate {bad!r} for {name!r}") from None
        if not np.isfinite(coords).all():
            raise ValueError(f"{path}:{line_no}: NaN or inf coordinate for {name!r}")
        if num is None:
            num = len(coords)
        elif len(coords) != num:
            raise ValueError(
                f"{path}:{line_no}: {len(coords)} landmarks for {name!r}, but earlier lines have {num}"
            )
        out.append((name, coords))
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_prepared_split(
    cache_dir: str | os.PathLike[str],
) -> tuple[list[Path], np.ndarray, np.ndarray, list[str]]:
    """Read a cache written by :func:`prepare_300w_split`.

    Returns:
        crop image paths; landmarks (N, L, 2) float64 normalized to the crops; boxes (N, 4) float64
        ``[xmin, ymin, w, h]`` of each crop in its source image's pixels; crop names.
    """
    cache_dir = Path(cache_dir)
    if not (cache_dir / MANIFEST_NAME).is_file():
        raise FileNotFoundError(
            f"{cache_dir} is not a prepared crop cache (no {MANIFEST_NAME}); run prepare_300w_split first"
        )
    entries = read_annotations(cache_dir / ANNOTATIONS_NAME)
    box_path = cache_dir / BOXES_NAME
    boxes = {}
    for line_no, line in enumerate(box_path.read_text(encoding="utf-8").splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 5 or not all(_is_float(t) for t in tokens[1:]):
            raise ValueError(f"{box_path}:{line_no}: expected '<name> xmin ymin w h', found {line!r}")
        boxes[tokens[0]] = [float(t) for t in tokens[1:]]
    names = [name for name, _ in entries]
    missing = [n for n in names if n not in boxes]
    if missing or len(boxes) != len(names):
        raise ValueError(
            f"{box_path} does not match {ANNOTATIONS_NAME} (e.g. no box for {missing[:1]}); "
            f"delete {cache_dir} to rebuild the cache"
        )
    paths = [cache_dir / IMAGES_DIRNAME / n for n in names]
    if not entries:
        return paths, np.zeros((0, 0, 2)), np.zeros((0, 4)), names
    landmarks = np.stack([lms for _, lms in entries])
    return paths, landmarks, np.array([boxes[n] for n in names], dtype=np.float64), names
