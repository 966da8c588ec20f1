"""iBUG ``.pts`` landmark files (the 300W / menpo format).

A file looks like::

    version: 1
    n_points: 68
    {
    x1 y1
    ...
    x68 y68
    }

Coordinates are **1-based pixel coordinates** (the centre of the top-left pixel is (1, 1)). The
official PIPNet code uses them as they are (then truncates them with ``int(float(x))``), and so does
this project; :func:`read_pts` returns exactly the numbers in the file, with no shift.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from pipnet_lit.datasets.records import DataFormatError, read_text_lines

__all__ = ["PtsFormatError", "read_pts", "write_pts"]


class PtsFormatError(DataFormatError):
    """A ``.pts`` file that does not follow the iBUG format; the message names the file and line."""


def _fail(path: Path, line_no: int, msg: str) -> PtsFormatError:
    return PtsFormatError(f"{path}:{line_no}: {msg}")


def _header_value(path: Path, lines: list[str], idx: int, key: str, example: str) -> str:
    if idx >= len(lines):
        raise _fail(path, idx + 1, f"file ends early; expected the header line '{example}'")
    text = lines[idx].strip()
    name, sep, value = text.partition(":")
    if not sep or name.strip() != key:
        raise _fail(path, idx + 1, f"expected the header line '{example}', found {text!r}")
    return value.strip()


def read_pts(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an iBUG ``.pts`` file.

    Tolerates CRLF line ends, a UTF-8 byte-order mark, extra spaces or tabs around tokens, and blank lines
    after the closing brace; anything else unexpected raises :class:`PtsFormatError` naming the file and
    the 1-based line.

    Returns:
        (L, 2) float64 array of (x, y) in the file's 1-based pixel coordinates, unchanged.
    """
    path = Path(path)
    lines = read_text_lines(path, PtsFormatError, keepends=False)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise _fail(path, 1, "empty file; expected the header line 'version: 1'")

    _header_value(path, lines, 0, "version", "version: 1")
    n_text = _header_value(path, lines, 1, "n_points", "n_points: 68")
    try:
        n_points = int(n_text)
    except ValueError:
        raise _fail(path, 2, f"n_points must be an integer, found {n_text!r}") from None
    if n_points <= 0:
        raise _fail(path, 2, f"n_points must be positive, found {n_points}")
    if len(lines) < 3 or lines[2].strip() != "{":
        found = repr(lines[2].strip()) if len(lines) >= 3 else "end of file"
        raise _fail(path, 3, f"expected an opening brace '{{', found {found}")

    coords = np.empty((min(n_points, len(lines)), 2), dtype=np.float64)  # n_points may be absurdly large
    for k in range(n_points):
        idx = 3 + k
        if idx >= len(lines):
            raise _fail(
                path, idx + 1, f"file ends after {k} points; n_points says {n_points} (no closing '}}')"
            )
        tokens = lines[idx].split()
        if tokens == ["}"]:
            raise _fail(path, idx + 1, f"found '}}' after {k} points; n_points says {n_points}")
        if len(tokens) != 2:
            raise _fail(path, idx + 1, f"expected two numbers 'x y' for point {k + 1}, found {lines[idx]!r}")
        for j, tok in enumerate(tokens):
            try:
                value = float(tok)
            except ValueError:
                raise _fail(path, idx + 1, f"non-numeric coordinate {tok!r} for point {k + 1}") from None
            if not math.isfinite(value):
                raise _fail(path, idx + 1, f"coordinate {tok!r} for point {k + 1} is not finite")
            coords[k, j] = value

    close = 3 + n_points
    if close >= len(lines):
        raise _fail(path, close + 1, "expected a closing brace '}' after the points, found end of file")
    if lines[close].strip() != "}":
        if len(lines[close].split()) == 2:
            raise _fail(path, close + 1, f"more points than n_points ({n_points}); expected '}}'")
        raise _fail(path, close + 1, f"expected a closing brace '}}', found {lines[close].strip()!r}")
    if close + 1 < len(lines):
        raise _fail(path, close + 2, f"unexpected content after the closing brace: {lines[close + 1]!r}")
    return coords


def write_pts(path: str | os.PathLike[str], points: np.ndarray, decimals: int | None = None) -> None:
    """Write (L, 2) points as an iBUG ``.pts`` file, coordinates as given (300W: 1-based pixels).

    Args:
        path: output file (``\\n`` line ends).
        points: (L, 2) finite (x, y) values.
        decimals: fixed number of decimals; ``None`` writes the shortest text that reads back exactly.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise ValueError(f"write_pts({path}): points must have shape (L, 2) with L > 0, got {pts.shape}")
    if not np.isfinite(pts).all():
        bad = int(np.argwhere(~np.isfinite(pts))[0, 0])
        raise ValueError(f"write_pts({path}): point {bad} is not finite: {pts[bad].tolist()}")
    if decimals is None:
        body = [f"{x!r} {y!r}" for x, y in pts.tolist()]
    else:
        body = [f"{x:.{decimals}f} {y:.{decimals}f}" for x, y in pts.tolist()]
    text = "\n".join(["version: 1", f"n_points: {len(pts)}", "{", *body, "}"]) + "\n"
    Path(path).write_text(text, encoding="utf-8", newline="\n")
