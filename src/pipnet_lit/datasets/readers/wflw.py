"""WFLW on disk: the 98-point annotation lists, the attribute subsets, and the WFLW-derived sets.

Layout (``root`` is the download's folder, e.g. ``data/WFLW``)::

    WFLW_images/<event folder>/<image>.jpg                  e.g. 0--Parade/0_Parade_marchingband_1_116.jpg
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt
    WFLW_annotations/list_98pt_test/list_98pt_test_{largepose,expression,illumination,makeup,occlusion,blur}.txt

A line of a ``list_98pt_rect_attr_*`` file has 207 whitespace-separated fields: 196 coordinates
``x0 y0 x1 y1 ... x97 y97`` (source pixels), the face rectangle ``x_min y_min x_max y_max``, six 0/1
attribute flags (pose, expression, illumination, make-up, occlusion, blur) and the image path under
``WFLW_images/``. An image with several faces appears on several lines. A subset file line has 197 fields
(the 196 coordinates and the path); the official code matches it to a test line by the key
``<first x as written> + '_' + <path>``.

Crop names are the official ``wflw_<train|test>_%04d`` of the 1-based line number (the official code numbers
every line, so a skipped bad line does not renumber the lines after it).

Box rules (:class:`WflwBox`, official ``process_wflw`` of ``lib/preprocess.py`` / ``lib/preprocess_uda.py``):
landmarks clipped to ``[0, W] x [0, H]``; every edge of the rectangle moved out by ``size * (1.2 - 1) / 2``
(``width`` for x, ``height`` for y; the self-training ``gssl`` crop moves the *top* edge down instead);
clamped to ``[0, W - 1] x [0, H - 1]``; crop with ``int()`` bounds; landmarks normalized by the clamped float
box. ``convert: wflw68`` then maps the normalized 98 points to the 68-point iBUG layout (:func:`wflw98_to_68`,
official ``convert_wflw``), for the cross-dataset WFLW-68 test of the self-training experiments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipnet_lit.datasets.geometry import (
    CropBox,
    clamp_box,
    clip_points,
    expand_box,
    margin,
    normalize_points,
)
from pipnet_lit.datasets.records import (
    BadInput,
    DataFormatError,
    FaceRecord,
    FileImage,
    MissingDownloadError,
    is_file,
    read_text_lines,
    relative_key,
)

__all__ = [
    "ATTRIBUTE_NAMES",
    "CONVERSIONS",
    "IMAGES_DIR",
    "LINE_FIELDS",
    "NUM_POINTS",
    "SUBSET_FIELDS",
    "WflwBox",
    "WflwLine",
    "parse_annotation_line",
    "read_wflw",
    "subset_key",
    "wflw98_to_68",
]

NUM_POINTS = 98
NUM_COORDS = 2 * NUM_POINTS
ATTRIBUTE_NAMES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
LINE_FIELDS = NUM_COORDS + 4 + len(ATTRIBUTE_NAMES) + 1  # 207
SUBSET_FIELDS = NUM_COORDS + 1  # 197
IMAGES_DIR = "WFLW_images"
CROP_SCALE = 1.2  # official process_wflw

# ---------------------------------------------------------------------------------------------------------
# 98 -> 68 points (official convert_wflw). Each 68-point landmark copies one WFLW point, except the inner
# brow points (x copied, y the mean of the upper and lower brow contour) and the eyelid points
# (0.666 * a + 0.333 * b; the weights sum to 0.999, as officially).

_SOURCE_98 = np.concatenate(
    [
        np.arange(0, 33, 2),  # jaw 0..16 <- every other contour point
        [33, 34, 35, 36, 37],  # right brow 17..21 (x; 18..21 get a mean y below)
        [42, 43, 44, 45, 46],  # left brow 22..26 (x; 22..25 get a mean y below)
        np.arange(51, 60),  # nose 27..35
        [60, 61, 63, 64, 65, 67],  # right eye 36..41 (37, 38, 40, 41 are weighted below)
        [68, 69, 71, 72, 73, 75],  # left eye 42..47 (43, 44, 46, 47 are weighted below)
        np.arange(76, 96),  # mouth 48..67
    ]
)
_BROW_ROWS_68 = np.array([18, 19, 20, 21, 22, 23, 24, 25])
_BROW_LOWER_98 = np.array([41, 40, 39, 38, 50, 49, 48, 47])  # averaged in y with _SOURCE_98[_BROW_ROWS_68]
_EYE_ROWS_68 = np.array([37, 38, 40, 41, 43, 44, 46, 47])
_EYE_A_98 = np.array([61, 63, 65, 67, 69, 71, 73, 75])  # weight 0.666
_EYE_B_98 = np.array([62, 62, 66, 66, 70, 70, 74, 74])  # weight 0.333
assert len(_SOURCE_98) == 68


def wflw98_to_68(points: np.ndarray) -> np.ndarray:
    """(..., 98, 2) WFLW landmarks -> (..., 68, 2) iBUG-68 layout, bit for bit as the official convert_wflw.

    The official code converts the normalized values after a ``str(float)`` round trip (exact in Python 3),
    with ``(a + b) / 2`` for the brow y and ``0.666 * a + 0.333 * b`` for the eyelids; pupils are dropped.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[-2:] != (NUM_POINTS, 2):
        raise ValueError(f"wflw98_to_68: expected (..., 98, 2) landmarks, got shape {pts.shape}")
    out = pts[..., _SOURCE_98, :].copy()
    upper_y = pts[..., _SOURCE_98[_BROW_ROWS_68], 1]
    out[..., _BROW_ROWS_68, 1] = (upper_y + pts[..., _BROW_LOWER_98, 1]) / 2
    out[..., _EYE_ROWS_68, :] = 0.666 * pts[..., _EYE_A_98, :] + 0.333 * pts[..., _EYE_B_98, :]
    return out


CONVERSIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"wflw68": wflw98_to_68}


# ---------------------------------------------------------------------------------------------------------
# Box rule.


@dataclass(frozen=True)
class WflwBox:
    """Official WFLW crop from the annotated rectangle ``(x_min, y_min, x_max, y_max)``.

    ``x_min -= width * (scale - 1) / 2``, ``x_max += ...`` (``width = x_max - x_min``, same for y with the
    height), then ``max(., 0)`` / ``min(., W - 1)``; ``gssl=True`` (self-training sets) moves the top edge
    *down* by ``height * (scale - 1) / 2`` instead of up. Landmarks are clipped to ``[0, W] x [0, H]`` and
    normalized by the clamped float box; ``convert`` names an entry of :data:`CONVERSIONS` applied last.
    """

    scale: float = CROP_SCALE
    gssl: bool = False
    convert: str | None = None

    def apply(
        self, points: np.ndarray | None, box: tuple[float, ...] | None, image_w: int, image_h: int
    ) -> tuple[CropBox, np.ndarray | None]:
        """(98, 2) source pixels (or None) + rect -> crop box and (98, 2) / (68, 2) normalized landmarks."""
        assert box is not None, "the WFLW rule needs the annotated rectangle"
        x_min, y_min, x_max, y_max = box
        dx = margin(x_max - x_min, self.scale)
        dy = margin(y_max - y_min, self.scale)
        top = -dy if self.gssl else dy  # y_min - (-dy) == y_min + dy exactly
        crop_box = clamp_box(*expand_box(x_min, y_min, x_max, y_max, dx, top, dx, dy), image_w, image_h)
        if points is None:
            return crop_box, None
        normalized = normalize_points(clip_points(points, image_w, image_h), crop_box)
        if self.convert is not None:
            normalized = CONVERSIONS[self.convert](normalized)
        return crop_box, normalized


# ---------------------------------------------------------------------------------------------------------
# Parsing.


@dataclass(frozen=True)
class WflwLine:
    """One parsed annotation line: (98, 2) points, rect, the six flags by name, the image path."""

    points: np.ndarray
    rect: tuple[float, float, float, float]
    flags: dict[str, int]
    image: str
    key: str  # official subset match key


def subset_key(fields: list[str]) -> str:
    """Official key matching a subset line to a test line: first x *as written* + '_' + image path."""
    return fields[0] + "_" + fields[-1]


def _parse_floats(fields: list[str], where: str, what: str) -> np.ndarray:
    try:
        values = np.array(fields, dtype=np.float64)
    except ValueError as err:
        raise DataFormatError(f"{where}: {what} must be numbers ({err})") from err
    if not np.isfinite(values).all():
        raise DataFormatError(f"{where}: {what} contain NaN or inf")
    return values


def parse_annotation_line(fields: list[str], where: str) -> WflwLine:
    """Parse the 207 fields of a ``list_98pt_rect_attr_*`` line; DataFormatError names ``where``."""
    if len(fields) != LINE_FIELDS:
        raise DataFormatError(
            f"{where}: expected {LINE_FIELDS} fields (196 coordinates, 4 rect values, 6 attribute flags, "
            f"image path), got {len(fields)}; is this a list_98pt_rect_attr_* file of WFLW?"
        )
    coords = _parse_floats(fields[:NUM_COORDS], where, "the 196 landmark coordinates")
    rect_values = _parse_floats(fields[NUM_COORDS : NUM_COORDS + 4], where, "the rect values")
    x_min, y_min, x_max, y_max = (float(v) for v in rect_values)
    if not (x_max > x_min and y_max > y_min):
        raise DataFormatError(
            f"{where}: rect x_min={x_min} y_min={y_min} x_max={x_max} y_max={y_max} is empty "
            "(expected x_min < x_max and y_min < y_max)"
        )
    flag_fields = fields[NUM_COORDS + 4 : NUM_COORDS + 4 + len(ATTRIBUTE_NAMES)]
    try:
        flags = [int(v) for v in flag_fields]
    except ValueError as err:
        raise DataFormatError(f"{where}: the 6 attribute flags must be integers, got {flag_fields}") from err
    return WflwLine(
        points=coords.reshape(NUM_POINTS, 2),
        rect=(x_min, y_min, x_max, y_max),
        flags=dict(zip(ATTRIBUTE_NAMES, flags, strict=True)),
        image=fields[-1],
        key=subset_key(fields),
    )


def _numbered_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, whitespace-split fields) of every non-blank line (DataFormatError: not UTF-8)."""
    lines = read_text_lines(path)
    return [(number, line.split()) for number, line in enumerate(lines, start=1) if line.strip()]


def default_prefix(path: Path) -> str:
    """``wflw_train`` / ``wflw_test`` from the list file's name (``..._train.txt`` / ``..._test.txt``)."""
    words = set(path.stem.lower().split("_"))
    kinds = [kind for kind in ("train", "test") if kind in words]
    if len(kinds) != 1:
        raise ValueError(
            f"cannot tell train from test in the WFLW list name {path.name!r}: give the split a "
            "'prefix:' (e.g. prefix: wflw_test gives wflw_test_0001, ...)"
        )
    return f"wflw_{kinds[0]}"


def read_wflw(
    root: Path,
    *,
    file: str,
    subset_files: Mapping[str, str] | None = None,
    gssl: bool = False,
    convert: str | None = None,
    unlabeled: bool = False,
    prefix: str | None = None,
    bad: BadInput,
) -> list[FaceRecord]:
    """Records of one WFLW annotation list, in file order.

    Args:
        root: the WFLW folder (holds ``WFLW_images`` and ``WFLW_annotations``).
        file: the 207-field list, relative to ``root``.
        subset_files: subset name -> 197-field subset list relative to ``root``; each record gets the
            attribute ``in_<name>`` (1 when a subset line matches it by the official key, else 0).
        gssl: the self-training crop (top edge moved down); see :class:`WflwBox`.
        convert: ``"wflw68"`` converts the normalized landmarks to the 68-point layout.
        unlabeled: records carry no landmarks (the box still comes from the rect).
        prefix: crop-name prefix (default ``wflw_train`` / ``wflw_test`` from the file name);
            names are ``<prefix>_%04d`` of the 1-based line number.
        bad: what to do with a malformed line, a missing image or an unmatched subset line.

    Attributes: ``pose``, ``expression``, ``illumination``, ``makeup``, ``occlusion``, ``blur`` (ints),
    ``image`` (the path field), ``in_<subset>`` (0/1) for each subset file.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingDownloadError(
            f"WFLW folder not found: {root} (expected WFLW_images/ and WFLW_annotations/)"
        )
    list_path = root / file
    if not list_path.is_file():
        raise MissingDownloadError(f"WFLW annotation list not found: {list_path}")
    images_dir = root / IMAGES_DIR
    if not images_dir.is_dir():
        raise MissingDownloadError(f"WFLW image folder not found: {images_dir}")
    if convert is not None and convert not in CONVERSIONS:
        raise ValueError(f"unknown WFLW landmark conversion {convert!r}; known: {sorted(CONVERSIONS)}")
    subset_paths = {str(name): root / rel for name, rel in (subset_files or {}).items()}
    for path in subset_paths.values():
        if not path.is_file():
            raise MissingDownloadError(f"WFLW subset list not found: {path}")
    name_prefix = prefix if prefix is not None else default_prefix(list_path)
    rule = WflwBox(gssl=bool(gssl), convert=convert)

    records: list[FaceRecord] = []
    index_by_key: dict[str, int] = {}  # later lines win, as in the official dict
    skipped_keys: set[str] = set()
    for number, fields in _numbered_lines(list_path):
        where = f"{list_path}:{number}"
        try:
            line = parse_annotation_line(fields, where)
        except DataFormatError as err:
            skipped_keys.add(subset_key(fields))
            bad(str(err))
            continue
        image_path = images_dir / line.image
        if not is_file(image_path):
            skipped_keys.add(line.key)
            bad(f"{where}: image {IMAGES_DIR}/{line.image} not found under {root}; is the download complete?")
            continue
        index_by_key[line.key] = len(records)
        records.append(
            FaceRecord(
                name=f"{name_prefix}_{number:04d}",
                image=FileImage(image_path, relative_key(image_path, root)),
                rule=rule,
                points=None if unlabeled else line.points,
                box=line.rect,
                attributes={**line.flags, "image": line.image, **{f"in_{name}": 0 for name in subset_paths}},
                source=where,
            )
        )

    for name, path in subset_paths.items():
        for number, fields in _numbered_lines(path):
            where = f"{path}:{number}"
            if len(fields) != SUBSET_FIELDS:
                bad(
                    f"{where}: expected {SUBSET_FIELDS} fields (196 coordinates and the image path), "
                    f"got {len(fields)}; is this a list_98pt_test_* file of WFLW?"
                )
                continue
            key = subset_key(fields)
            if key in index_by_key:
                records[index_by_key[key]].attributes[f"in_{name}"] = 1
            elif key not in skipped_keys:  # lines already reported as bad are not reported twice
                bad(
                    f"{where}: no line of {list_path} has first x {fields[0]!r} and image {fields[-1]!r} "
                    "(the official match key); are both lists from the same WFLW release?"
                )
    return records
