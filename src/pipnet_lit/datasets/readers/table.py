"""Custom data as a table: one face per row of a CSV file (header row) or a JSON-lines file.

CSV columns (any order):

- ``image``: the image path, relative to the dataset folder (``root``) or absolute.
- ``x0,y0,x1,y1,...,x{L-1},y{L-1}``: the L landmarks in pixels (any L, the same for every row); all empty in
  a row marks an unlabeled face (the row then needs a box).
- ``box_x0,box_y0,box_x1,box_y1`` (optional): a face box in pixels (left, top, right, bottom).
- ``name`` (optional): the crop name; default below.
- any other column: a per-face attribute for ``where:`` filters (``{split: train}``); a number written
  canonically (``1``, ``0.5``) becomes an int or float, an empty cell None, anything else stays text.

JSON lines: ``{"image": ..., "landmarks": [[x, y], ...], "box": [x0, y0, x1, y1], "name": ...}`` per line,
``landmarks`` / ``box`` / ``name`` optional (``landmarks`` absent, null or [] marks an unlabeled face); any
other key is an attribute (lists and objects are kept as their JSON text).

Coordinates are 0-based continuous pixels: (0, 0) is the top-left corner of the top-left pixel, whose centre
is (0.5, 0.5); they are used exactly as written (subtract 1 from 1-based tools' values).

Box rule (:class:`TableBox`): ``box_from: box`` takes the row's box, ``landmarks`` the landmarks' float
min/max box, ``auto`` the box when the row has one and the landmarks otherwise. Each side then moves out by
``size * (scale - 1) / 2`` (``scale`` 1.1 by default), the box is clamped to ``[0, W-1] x [0, H-1]``, the
crop is ``image[int(y0):int(y1), int(x0):int(x1)]`` and the landmarks are normalized by the float box, not
clipped (the WFLW arithmetic with the table's scale and without WFLW's landmark clipping).

Splits sharing one table select their rows with the reader argument ``where`` (attribute -> value or list of
values, compared as text like the dataset YAML's test subsets).

Names: the ``name`` value, else the image path (relative to the root) without its extension with ``/`` ->
``_`` (``images/0001.png`` -> ``images_0001``), plus ``_<k>`` (k = 1, 2, ... in file order) on every face of
an image that has several unnamed faces.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pipnet_lit.datasets.geometry import CropBox, clamp_box, expand_box, margin, normalize_points
from pipnet_lit.datasets.records import (
    BadInput,
    DataFormatError,
    FaceRecord,
    FileImage,
    MissingDownloadError,
    is_file,
    read_text,
    read_text_lines,
    relative_key,
)

__all__ = ["BOX_COLUMNS", "BOX_SOURCES", "TableBox", "default_name", "landmark_box", "read_table"]

BOX_SOURCES = ("auto", "box", "landmarks")
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
_LANDMARK_COLUMN = re.compile(r"^([xy])(\d+)$")
_JSON_FIELDS = ("image", "landmarks", "box", "name")


@dataclass(frozen=True)
class TableBox:
    """The table format's box rule (see the module docstring); its repr is part of the cache fingerprint."""

    scale: float = 1.1
    box_from: str = "auto"

    def __post_init__(self) -> None:
        if self.box_from not in BOX_SOURCES:
            raise ValueError(f"TableBox: box_from must be one of {list(BOX_SOURCES)}, got {self.box_from!r}")

    def apply(
        self, points: np.ndarray | None, box: tuple[float, ...] | None, image_w: int, image_h: int
    ) -> tuple[CropBox, np.ndarray | None]:
        """(L, 2) landmarks or None, box (x0, y0, x1, y1) or None -> crop box, (L, 2) normalized or None."""
        use_box = self.box_from == "box" or (self.box_from == "auto" and box is not None)
        if use_box:
            if box is None:
                raise ValueError("TableBox(box_from='box') needs a box")
            x0, y0, x1, y1 = (float(v) for v in box)
        else:
            if points is None or len(points) == 0:
                raise ValueError(f"TableBox(box_from={self.box_from!r}) needs landmarks when there is no box")
            x0, y0, x1, y1 = landmark_box(points)
        width = x1 - x0
        height = y1 - y0
        dx = margin(width, self.scale)
        dy = margin(height, self.scale)
        crop_box = clamp_box(*expand_box(x0, y0, x1, y1, dx, dy, dx, dy), image_w, image_h)
        if points is None:
            return crop_box, None
        return crop_box, normalize_points(points, crop_box)


def landmark_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """(L, 2) landmarks -> their float min/max box ``(x0, y0, x1, y1)`` (no truncation)."""
    pts = np.asarray(points, dtype=np.float64)
    low = pts.min(axis=0)
    high = pts.max(axis=0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def default_name(image: str, root: Path) -> str:
    """Image path (relative to ``root`` when under it) without extension, ``/`` -> ``_``."""
    path = PurePosixPath(image.replace("\\", "/"))
    if path.is_absolute():
        try:
            path = path.relative_to(PurePosixPath(Path(root).absolute().as_posix()))
        except ValueError:
            path = PurePosixPath(*path.parts[1:])
    if not path.name:  # "", ".", "/": no file name, so no name (the row is then reported)
        return ""
    return path.with_suffix("").as_posix().replace("/", "_")


def attribute_value(text: str) -> int | float | str | None:
    """A CSV cell as an attribute: None when empty; an int or float when it is one written canonically
    (``str(value)`` gives the text back: ``1``, ``-2``, ``0.5``); else the text (``007``, ``0.50``, ``1e-3``).
    """
    stripped = text.strip()
    if not stripped:
        return None
    for kind in (int, float):
        try:
            value = kind(stripped)
        except ValueError:
            continue
        if str(value) == stripped:
            return value
    return stripped


def matches(attributes: dict[str, Any], where: dict[str, tuple[Any, ...]]) -> bool:
    """Whether a face's attributes pass a ``where`` filter (values compared as text, like test subsets)."""
    return all(str(attributes.get(key)) in {str(v) for v in values} for key, values in where.items())


@dataclass
class _Row:
    """One parsed row before naming."""

    line: int
    image: str
    points: np.ndarray | None
    box: tuple[float, float, float, float] | None
    name: str | None
    attributes: dict[str, Any] | None  # None: unknown (the row could not be split into its fields)
    error: str | None = None  # what is wrong with the row (it still counts for the image's face numbering)


class _RowError(ValueError):
    """A malformed row: the message says what is wrong and what to do (without the file:line prefix)."""


def _numbers(values: list[Any], labels: list[str], what: str) -> np.ndarray:
    """Values -> float64 array; a clear error naming the first non-numeric or non-finite one."""
    try:
        array = None if any(isinstance(v, bool) for v in values) else np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer beyond float range
        array = None
    if array is None or not np.isfinite(array).all():
        for value, label in zip(values, labels, strict=True):
            try:
                ok = not isinstance(value, bool) and math.isfinite(float(value))
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok:
                raise _RowError(f"{what} {label} is {value!r}, not a finite number; write a number in pixels")
    return array


def _box_of(values: list[Any], labels: list[str]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in _numbers(values, labels, "box value"))
    if not (x1 > x0 and y1 > y0):
        raise _RowError(
            f"box ({x0}, {y0}, {x1}, {y1}) is empty; the box is (left, top, right, bottom) with right > left "
            "and bottom > top"
        )
    return x0, y0, x1, y1


def _check_labels(points: np.ndarray | None, box: tuple | None, box_from: str) -> None:
    """The row has what ``box_from`` needs."""
    if points is None and box is None:
        raise _RowError("the row has neither landmarks nor a box; an unlabeled face needs a box")
    if box_from == "box" and box is None:
        raise _RowError("the row has no box, and box_from is 'box'; add its box or use box_from: auto")
    if box_from == "landmarks" and points is None:
        raise _RowError(
            "the row has no landmarks, and box_from is 'landmarks'; label it or use box_from: auto"
        )
    if points is not None and (box_from == "landmarks" or box is None):
        x0, y0, x1, y1 = landmark_box(points)
        if not (x1 > x0 and y1 > y0):
            raise _RowError(
                f"the landmarks' box ({x0}, {y0}, {x1}, {y1}) is empty (all points on a line); give a box"
            )


def _csv_layout(
    header: list[str], path: Path, box_from: str
) -> tuple[list[int], list[int], list[int] | None]:
    """Header -> column positions of x0.., y0.. and the box (None: no box columns)."""
    where = f"{path}:1"
    duplicates = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicates:
        raise DataFormatError(
            f"{where}: duplicate column(s) {duplicates} in the header; name each column once"
        )
    if "image" not in header:
        raise DataFormatError(
            f"{where}: the header has no 'image' column; the first row must name the columns "
            "(image, x0, y0, x1, y1, ..., optional box_x0, box_y0, box_x1, box_y1, name)"
        )
    coords: dict[str, dict[int, int]] = {"x": {}, "y": {}}
    for position, column in enumerate(header):
        match = _LANDMARK_COLUMN.match(column)
        if match:
            coords[match.group(1)][int(match.group(2))] = position
    num_landmarks = len(coords["x"])
    expected = set(range(num_landmarks))
    if set(coords["x"]) != expected or set(coords["y"]) != expected:
        raise DataFormatError(
            f"{where}: landmark columns must be x0, y0, ..., x{{L-1}}, y{{L-1}} with no gaps; got x indices "
            f"{sorted(coords['x'])} and y indices {sorted(coords['y'])}"
        )
    present = [c for c in BOX_COLUMNS if c in header]
    if present and len(present) != len(BOX_COLUMNS):
        raise DataFormatError(
            f"{where}: the box needs all of {list(BOX_COLUMNS)}; the header has only {present}"
        )
    if num_landmarks == 0 and not present:
        raise DataFormatError(
            f"{where}: the header has neither landmark columns (x0, y0, ...) nor box columns"
        )
    if box_from == "box" and not present:
        raise DataFormatError(f"{where}: box_from is 'box' but the header has no {list(BOX_COLUMNS)} columns")
    box = [header.index(c) for c in BOX_COLUMNS] if present else None
    return [coords["x"][k] for k in range(num_landmarks)], [coords["y"][k] for k in range(num_landmarks)], box


def _read_csv(path: Path, box_from: str) -> list[_Row]:
    """Rows of a CSV table (malformed rows carry their error); header problems raise DataFormatError."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        return _csv_rows(reader, path, box_from)
    except csv.Error as err:  # e.g. a field over the csv module's size limit (an unclosed quote)
        raise DataFormatError(
            f"{path}:{reader.line_num}: the csv module cannot read this row ({err})"
        ) from None


def _csv_rows(reader: Any, path: Path, box_from: str) -> list[_Row]:
    """The rows of a ``csv.reader`` (header first), parsed as :func:`_read_csv` says."""
    rows: list[_Row] = []
    header = next(reader, None)
    if header is None:
        raise DataFormatError(f"{path}:1: the file is empty; the first row must name the columns")
    header = [column.strip() for column in header]
    x_cols, y_cols, box_cols = _csv_layout(header, path, box_from)
    coord_cols = [c for pair in zip(x_cols, y_cols, strict=True) for c in pair]
    image_col = header.index("image")
    name_col = header.index("name") if "name" in header else None
    reserved = set(coord_cols) | set(box_cols or ()) | {image_col, name_col}
    extra = [(position, column) for position, column in enumerate(header) if position not in reserved]
    line = reader.line_num
    for cells in reader:
        start, line = line + 1, reader.line_num
        if not cells or not any(cell.strip() for cell in cells):
            continue
        image = cells[image_col].strip() if image_col < len(cells) else ""
        name = cells[name_col].strip() if name_col is not None and name_col < len(cells) else ""
        attributes = None
        if len(cells) == len(header):
            attributes = {column: attribute_value(cells[position]) for position, column in extra}
        try:
            if len(cells) != len(header):
                raise _RowError(
                    f"the row has {len(cells)} fields but the header has {len(header)} columns; every "
                    f"row needs one value per column ({len(x_cols)} landmarks and the other columns)"
                )
            if not image:
                raise _RowError(
                    "the 'image' value is empty; give the image path relative to the dataset folder"
                )
            coord_text = [cells[c].strip() for c in coord_cols]
            filled = sum(1 for text in coord_text if text)
            if filled == 0:
                points = None
            elif filled < len(coord_text):
                raise _RowError(
                    f"{len(coord_text) - filled} of the {len(coord_text)} landmark values are empty; "
                    "fill them all, or leave them all empty for an unlabeled face (it then needs a box)"
                )
            else:
                labels = [header[c] for c in coord_cols]
                points = _numbers(coord_text, labels, "landmark value").reshape(-1, 2)
            box = None
            if box_cols is not None:
                box_text = [cells[c].strip() for c in box_cols]
                if any(box_text):
                    box = _box_of(box_text, list(BOX_COLUMNS))
            _check_labels(points, box, box_from)
        except _RowError as err:
            rows.append(_Row(start, image, None, None, name or None, attributes, str(err)))
            continue
        rows.append(_Row(start, image, points, box, name or None, attributes))
    return rows


def _json_attribute(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


def _read_jsonl(path: Path, box_from: str) -> list[_Row]:
    """Rows of a JSON-lines table (malformed rows carry their error)."""
    rows: list[_Row] = []
    count_line: tuple[int, int] | None = None  # (L, line that set it)
    for line, text in enumerate(read_text_lines(path), start=1):
        if not text.strip():
            continue
        image, name, attributes = "", None, None
        try:
            try:
                entry = json.loads(text)
            except json.JSONDecodeError as err:
                raise _RowError(
                    f"not valid JSON ({err.msg} at column {err.colno}); write one object a line"
                ) from None
            except (ValueError, RecursionError) as err:  # an integer of 4300+ digits, deep nesting
                raise _RowError(f"not JSON this reader can read ({type(err).__name__}: {err})") from None
            if not isinstance(entry, dict):
                raise _RowError(
                    f"expected a JSON object, got {type(entry).__name__}; write one object a line"
                )
            attributes = {k: _json_attribute(v) for k, v in entry.items() if k not in _JSON_FIELDS}
            image = entry.get("image")
            image = image.strip() if isinstance(image, str) else ""
            name = entry.get("name")
            if not image:
                raise _RowError(
                    "missing or empty 'image'; give the image path relative to the dataset folder"
                )
            raw_points = entry.get("landmarks")
            points = None
            if raw_points is not None and raw_points != []:
                if not isinstance(raw_points, list) or not all(
                    isinstance(p, list) and len(p) == 2 for p in raw_points
                ):
                    raise _RowError("'landmarks' must be a list of [x, y] pairs")
                flat = [v for pair in raw_points for v in pair]
                labels = [f"{axis}{k}" for k in range(len(raw_points)) for axis in "xy"]
                points = _numbers(flat, labels, "landmark value").reshape(-1, 2)
                if count_line is not None and len(points) != count_line[0]:
                    raise _RowError(
                        f"the row has {len(points)} landmarks but line {count_line[1]} has "
                        f"{count_line[0]}; every row needs the same landmarks in the same order"
                    )
            raw_box = entry.get("box")
            box = None
            if raw_box is not None:
                if not isinstance(raw_box, list) or len(raw_box) != 4:
                    raise _RowError("'box' must be [x0, y0, x1, y1] (left, top, right, bottom) or null")
                box = _box_of(raw_box, list(BOX_COLUMNS))
            if name is not None and not isinstance(name, (str, int)):
                raise _RowError(f"'name' must be a string, got {name!r}")
            _check_labels(points, box, box_from)
        except _RowError as err:
            name_text = str(name).strip() if isinstance(name, (str, int)) else ""
            rows.append(_Row(line, image, None, None, name_text or None, attributes, str(err)))
            continue
        if points is not None and count_line is None:
            count_line = (len(points), line)
        name_text = str(name).strip() if name is not None else ""
        rows.append(_Row(line, image, points, box, name_text or None, attributes))
    return rows


def _selection(where: Any, rows: list[_Row], path: Path) -> dict[str, tuple[Any, ...]]:
    """A split's ``where:`` as attribute -> allowed values; an attribute no row has is an error."""
    if not where:
        return {}
    if not isinstance(where, dict):
        raise ValueError(f"{path}: where must map attribute names to values, got {where!r}")
    known = {key for row in rows if row.attributes for key in row.attributes}
    missing = sorted(str(key) for key in where if key not in known)
    if missing:
        raise ValueError(
            f"{path}: where: no row has the attribute(s) {missing}; "
            f"the table's attributes are {sorted(known)}"
        )
    return {str(k): tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in where.items()}


def read_table(
    root: Path,
    *,
    file: str,
    scale: float = 1.1,
    box_from: str = "auto",
    where: dict[str, Any] | None = None,
    bad: BadInput,
) -> list[FaceRecord]:
    """Records of the rows of ``file`` (``.csv`` or ``.jsonl``, relative to ``root``), in file order.

    ``where`` keeps the rows whose attributes have the given values (``{split: train}``; a list allows
    several), so splits can share one table; names are given over the whole file, so they do not depend
    on it. Attributes: the row's extra columns / keys. Raw record fields: ``points`` (L, 2) as written or
    None, ``box`` ``(x0, y0, x1, y1)`` as written or None. Malformed rows (of the selection, or that could
    not be read far enough to tell) and missing images go to ``bad``.
    """
    if box_from not in BOX_SOURCES:
        raise ValueError(f"table format: box_from must be one of {list(BOX_SOURCES)}, got {box_from!r}")
    scale = float(scale)
    if not scale > 0:
        raise ValueError(
            f"table format: scale must be > 0 (1.1 adds 5% of the box on each side), got {scale}"
        )
    root = Path(root)
    if not root.is_dir():
        raise MissingDownloadError(f"dataset folder not found: {root}")
    path = root / file
    if not path.is_file():
        raise MissingDownloadError(f"table file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path, box_from)
    elif suffix == ".jsonl":
        rows = _read_jsonl(path, box_from)
    else:
        raise DataFormatError(f"{path}: the table format reads .csv (with a header row) or .jsonl files")

    selection = _selection(where, rows, path)
    rule = TableBox(scale, box_from)
    # Default names depend on the image and name columns only, so a malformed row renames no other face.
    bases = [default_name(row.image, root) if row.name is None and row.image else None for row in rows]
    faces_per_base = Counter(base for base in bases if base is not None)
    seen_per_base: Counter[str] = Counter()
    used: dict[str, int] = {}
    records: list[FaceRecord] = []
    for row, base in zip(rows, bases, strict=True):
        at = f"{path}:{row.line}"
        if base is not None:
            seen_per_base[base] += 1
            name = f"{base}_{seen_per_base[base]}" if faces_per_base[base] > 1 else base
        else:
            name = row.name
        if selection and row.attributes is not None and not matches(row.attributes, selection):
            continue
        if row.error is not None:
            bad(f"{at}: {row.error}")
            continue
        if not name or "/" in name or "\\" in name:
            bad(f"{at}: the crop name {name!r} is empty or has a slash; give a 'name' without '/' or '\\'")
            continue
        if name in used:
            bad(
                f"{at}: the crop name {name!r} is already used by line {used[name]}; "
                "give each face a unique 'name'"
            )
            continue
        image_path = Path(row.image)
        if not image_path.is_absolute():
            image_path = root / image_path
        if not is_file(image_path):
            bad(f"{at}: image not found: {image_path}; fix the path (relative to {root}) or remove the row")
            continue
        used[name] = row.line
        records.append(
            FaceRecord(
                name=name,
                image=FileImage(image_path, relative_key(image_path, root)),
                rule=rule,
                points=row.points,
                box=row.box,
                attributes=row.attributes,
                source=at,
            )
        )
    return records
