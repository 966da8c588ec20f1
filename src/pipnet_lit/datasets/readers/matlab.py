"""MATLAB ``.mat`` files: version detection and loading of v5 (scipy) and v7.3 (HDF5, h5py) files.

Several face datasets ship as ``.mat`` files in one specific version: COFW's ``COFW_*_color.mat`` are
MATLAB v7.3 (HDF5; ``scipy.io.loadmat`` cannot read them), AFLW's ``AFLWinfo_release.mat`` is v5, and
the small COFW-68 files may be either. The loaders return variables in MATLAB's own shape and order:

* numeric / logical arrays: numpy arrays of MATLAB's ``(rows, cols, ...)`` shape (at least 2-D, as MATLAB
  has no 1-D arrays), dtype as stored (``double`` -> float64, ``int16`` -> int16, ``logical`` -> bool);
* cell arrays: lists of their elements in MATLAB's linear (column-major) order, each element converted
  the same way (an RGB image cell element comes back ``(H, W, 3)``, a gray one ``(H, W)``);
* char arrays: ``str`` (one row) or a list of ``str`` (several rows); structs (v7.3): dicts of fields.

v7.3 files are HDF5 files with a 512-byte user block whose text starts ``MATLAB 7.3 MAT-file``. MATLAB
writes arrays column-major, so HDF5 sees every array with its axes reversed (an ``H x W x 3`` image is a
``3 x W x H`` dataset); the v7.3 loader transposes them back. Cell arrays are datasets of object
references into the ``#refs#`` group.

h5py and scipy are optional dependencies, imported only by the loaders that need them.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipnet_lit.datasets.records import DataFormatError, MissingDownloadError, to_bgr_uint8

__all__ = [
    "MatCellImage",
    "load_mat",
    "load_mat_v5",
    "load_mat_v73",
    "load_mat_v73_cell_item",
    "mat_v73_cell_shapes",
    "mat_version",
]

HEADER_BYTES = 128
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
V73_USERBLOCK_BYTES = 512
# HDF5 bookkeeping entries of a v7.3 file that are not MATLAB variables.
_INTERNAL_NAMES = ("#refs#", "#subsystem#")

_VERSION_WORDS = {
    "v4": "MATLAB v4 (no text header)",
    "v5": "MATLAB v5/v7 (header 'MATLAB 5.0 MAT-file')",
    "v7.3": "MATLAB v7.3 (HDF5)",
    "hdf5": "a plain HDF5 file without the MATLAB v7.3 header",
    "unknown": "not a MATLAB file that this reader recognizes",
}


def mat_version(path: Path) -> str:
    """The format of a ``.mat`` file from its first bytes: ``v4``, ``v5``, ``v7.3``, ``hdf5`` or ``unknown``.

    ``"v5"`` covers MATLAB's level-5 format (``save -v6`` and the default ``-v7``, header text
    ``MATLAB 5.0 MAT-file``); ``"v7.3"`` an HDF5 file with the MATLAB 7.3 user block; ``"hdf5"`` an HDF5
    file without it; ``"v4"`` the header-less level-4 format (a plausible MOPT type word first).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDownloadError(f"MATLAB file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(V73_USERBLOCK_BYTES + len(HDF5_SIGNATURE))
    text = head[:HEADER_BYTES]
    if text.startswith(b"MATLAB 7.3 MAT-file"):
        return "v7.3"
    if text.startswith(b"MATLAB 5.0 MAT-file"):
        return "v5"
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    if len(head) >= 20 and _is_v4_type_word(head[:4]):
        return "v4"
    return "unknown"


def _is_v4_type_word(word: bytes) -> bool:
    """Whether 4 bytes are a level-4 MOPT word (M: byte order 0-4, O: 0, P: precision 0-5, T: type 0-2)."""
    for order in ("<", ">"):
        value = int(np.frombuffer(word, dtype=f"{order}i4")[0])
        if 0 <= value < 5000:
            m, o, p, t = value // 1000, value // 100 % 10, value // 10 % 10, value % 10
            if m <= 4 and o == 0 and p <= 5 and t <= 2:
                return True
    return False


def _check_version(path: Path, accepted: Sequence[str], dataset: str, needs: str) -> str:
    version = mat_version(path)
    if version not in accepted:
        raise DataFormatError(
            f"{dataset} needs the {needs} file {path.name} as published; this file ({path}) is "
            f"{_VERSION_WORDS[version]}. Download it again (a re-saved or converted file has another layout)."
        )
    return version


def _missing_key(path: Path, key: str, present: Sequence[str]) -> DataFormatError:
    return DataFormatError(f"{path}: no variable {key!r} in this MATLAB file; it holds {sorted(present)}")


# ---------------------------------------------------------------------------------------------------------
# v7.3 (HDF5)


def _import_h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading MATLAB v7.3 (HDF5) files needs h5py: pip install h5py") from err
    return h5py


def _matlab_class(node) -> str:
    value = node.attrs.get("MATLAB_class", b"")
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _convert_h5(node, file) -> Any:
    """One HDF5 node of a v7.3 file -> MATLAB-shaped Python value (see the module docstring)."""
    h5py = _import_h5py()
    if isinstance(node, h5py.Group):  # struct (or an object this loader does not interpret): dict of fields
        return {name: _convert_h5(node[name], file) for name in node if name not in _INTERNAL_NAMES}
    matlab_class = _matlab_class(node)
    if node.attrs.get("MATLAB_empty", 0):
        # Empty arrays hold their MATLAB dimensions as data.
        dims = tuple(int(d) for d in np.asarray(node[()]).ravel())
        if 0 not in dims:
            raise ValueError(f"{node.name} is marked empty but has dimensions {dims}")
        return [] if matlab_class == "cell" else np.zeros(dims, dtype=np.float64)
    data = node[()]
    if h5py.check_dtype(ref=node.dtype) is not None:  # cell array: object references, C order == MATLAB order
        return [_convert_h5(file[ref], file) for ref in np.asarray(data).ravel()]
    array = np.asarray(data).T  # column-major on disk: reverse the axes back to MATLAB's
    if matlab_class == "char":
        rows = ["".join(map(chr, row)) for row in np.atleast_2d(array).astype(np.uint32)]
        return rows[0] if len(rows) == 1 else rows
    if matlab_class == "logical":
        return array.astype(bool)
    return array


@contextmanager
def _open_v73(path: Path, dataset: str) -> Iterator[Any]:
    """The open h5py file; what h5py raises on a damaged file while it is open becomes a DataFormatError."""
    path = Path(path)
    if not path.is_file():
        raise MissingDownloadError(f"MATLAB file not found: {path}")
    _check_version(path, ("v7.3", "hdf5"), dataset, "MATLAB v7.3 (HDF5)")
    h5py = _import_h5py()
    try:
        with h5py.File(path, "r") as file:
            yield file
    except DataFormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, RecursionError) as err:
        # truncated file, bad signature, dangling object reference, corrupt header or attribute, ...
        raise DataFormatError(
            f"{path}: could not read this MATLAB v7.3 (HDF5) file ({type(err).__name__}: {err}); it is "
            "damaged or incomplete, download it again"
        ) from err


def _variable(file, path: Path, key: str):
    if key not in file:
        raise _missing_key(path, key, [name for name in file if name not in _INTERNAL_NAMES])
    return file[key]


def load_mat_v73(path: Path, keys: Sequence[str], *, dataset: str = "This dataset") -> dict[str, Any]:
    """Variables ``keys`` of a MATLAB v7.3 (HDF5) file, MATLAB-shaped (see the module docstring).

    Raises:
        MissingDownloadError: no file at ``path``.
        DataFormatError: the file is another version (naming it and the one ``dataset`` needs), or a key
            is missing (naming the variables present).
    """
    path = Path(path)
    with _open_v73(path, dataset) as file:
        return {key: _convert_h5(_variable(file, path, key), file) for key in keys}


def mat_v73_cell_shapes(path: Path, key: str, *, dataset: str = "This dataset") -> list[tuple[int, ...]]:
    """MATLAB shapes of the elements of cell array ``key`` (linear order), read without loading any data."""
    path = Path(path)
    h5py = _import_h5py()
    with _open_v73(path, dataset) as file:
        node = _variable(file, path, key)
        if not isinstance(node, h5py.Dataset) or h5py.check_dtype(ref=node.dtype) is None:
            kind = _matlab_class(node) or "unknown"
            raise DataFormatError(f"{path}: variable {key!r} is not a cell array (MATLAB class {kind})")
        shapes = []
        for ref in np.asarray(node[()]).ravel():
            item = file[ref]
            empty = isinstance(item, h5py.Dataset) and item.attrs.get("MATLAB_empty", 0)
            shapes.append((0,) if empty or not isinstance(item, h5py.Dataset) else tuple(item.shape[::-1]))
        return shapes


def load_mat_v73_cell_item(path: Path, key: str, index: int, *, dataset: str = "This dataset") -> Any:
    """Element ``index`` (0-based, MATLAB linear order) of cell array ``key``, read on its own."""
    path = Path(path)
    h5py = _import_h5py()
    with _open_v73(path, dataset) as file:
        node = _variable(file, path, key)
        if not isinstance(node, h5py.Dataset) or h5py.check_dtype(ref=node.dtype) is None:
            raise DataFormatError(f"{path}: variable {key!r} is not a cell array")
        refs = np.asarray(node[()]).ravel()
        if not 0 <= index < len(refs):
            raise DataFormatError(f"{path}: cell {key!r} has {len(refs)} entries, no entry {index + 1}")
        return _convert_h5(file[refs[index]], file)


@dataclass(frozen=True)
class MatCellImage:
    """An image stored in a cell array of a MATLAB v7.3 file, read from the file only when loaded.

    ``key`` is the file's name relative to the dataset folder (identity survives a moved download); the
    identity is (that name, file size, variable, index), so a cache hit never decodes the image.
    """

    path: Path
    variable: str
    index: int  # 0-based position in the cell array
    key: str = ""
    rgb: bool = True  # MATLAB images are RGB

    def load(self) -> np.ndarray:
        """(H, W, 3) uint8 BGR."""
        array = load_mat_v73_cell_item(self.path, self.variable, self.index)
        return to_bgr_uint8(array, self.describe(), rgb=self.rgb)

    def identity(self) -> str:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = -1
        return f"{self.key or self.path.name}:{size}:{self.variable}[{self.index}]"

    def describe(self) -> str:
        return f"{self.path} {self.variable}{{{self.index + 1}}}"


# ---------------------------------------------------------------------------------------------------------
# v5 (scipy)


def _convert_v5(value: Any) -> Any:
    """A ``scipy.io.loadmat(squeeze_me=False)`` value -> the MATLAB-shaped value of the module docstring."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "U":  # char array: one str per row
            rows = [str(s) for s in value.ravel()]
            return "" if not rows else rows[0] if len(rows) == 1 else rows
        if value.dtype == object:  # cell array
            return [_convert_v5(item) for item in value.ravel(order="F")]
        if value.dtype.names:  # struct array: a dict of fields for a 1x1 struct, else a list of dicts
            structs = [
                {name: _convert_v5(item[name]) for name in value.dtype.names} for item in value.ravel("F")
            ]
            return structs[0] if len(structs) == 1 else structs
    return value


# v5 data element type codes (the first word of a tag): miINT8 .. miUINT64 and miUTF8/16/32 hold data;
# miMATRIX holds one array as nested elements; miCOMPRESSED wraps one top-level variable in zlib.
_V5_DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED, _MI_UTF8 = 1, 5, 6, 14, 15, 16
# array classes (low byte of the array flags) whose layout _check_v5_array knows
_MX_CELL, _MX_STRUCT, _MX_CHAR, _MX_SPARSE = 1, 2, 4, 5
_MX_NUMERIC = frozenset(range(6, 16))  # double, single, int8 .. uint64


class _V5Walk:
    """Checks the data elements of a MATLAB v5 file the way ``scipy.io.loadmat`` will read them.

    scipy (1.17) trusts a v5 file's structure: it looks an element's type code up in a table without a bounds
    check, and reads as many elements as an array's flags and dimensions promise, past the array's end if
    need be; one damaged byte then crashes the process (a segmentation fault) instead of raising. The walk
    refuses such a file first: DataFormatError naming the file and the byte offset (counted in the
    decompressed variable for compressed ones).
    """

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.order = ">" if data[126:128] == b"MI" else "<"

    def fail(self, where: str, at: int, problem: str, damaged: bool = True) -> DataFormatError:
        advice = "; the file is damaged or incomplete, download it again" if damaged else ""
        return DataFormatError(f"{self.path}: {where}byte {at}: {problem}{advice}")

    def elements(
        self, buffer: bytes, start: int, end: int, top: bool, where: str
    ) -> list[tuple[int, int, int]]:
        """(type code, byte count, offset of the data) of each element in ``buffer[start:end]``; the data of a
        small element starts 4 bytes after its tag, of the others 8."""
        found = []
        pos = start
        while pos < end:
            if end - pos < 8:
                raise self.fail(where, pos, "the data ends inside an element tag")
            word, count = struct.unpack_from(self.order + "II", buffer, pos)
            if word >> 16 and not top:  # small data element: type and byte count share the first word
                mdtype, count, size = word & 0xFFFF, word >> 16, 8
                data_at, limit = pos + 4, 4
            else:
                mdtype, size = word, 8 + count + (0 if top else -count % 8)
                data_at, limit = pos + 8, end - pos - 8
            if count > limit:
                raise self.fail(where, pos, f"an element of {count} bytes runs past the end of its array")
            found.append((mdtype, count, data_at))
            pos += size
        return found

    def array(self, buffer: bytes, at: int, count: int, where: str, wanted: Sequence[str] | None) -> str:
        """Check the miMATRIX payload ``buffer[at:at + count]``; returns the array's name. The elements of a
        top-level variable not in ``wanted`` are not checked (scipy reads only its header)."""
        parts = self.elements(buffer, at, at + count, False, where)
        if len(parts) < 3 or parts[0][:2] != (_MI_UINT32, 8):
            raise self.fail(where, at, "an array without its flags, dimensions and name")
        flags = struct.unpack_from(self.order + "I", buffer, parts[0][2])[0]
        mclass, is_complex = flags & 0xFF, flags >> 11 & 1
        (dims_type, dims_bytes, dims_at), (name_type, name_bytes, name_at) = parts[1], parts[2]
        if dims_type not in (_MI_INT32, _MI_UINT32) or dims_bytes % 4 or not 8 <= dims_bytes <= 128:
            raise self.fail(where, at, "an array whose dimensions are not 2 to 32 integers")
        dims = struct.unpack_from(f"{self.order}{dims_bytes // 4}i", buffer, dims_at)
        if name_type not in (_MI_INT8, _MI_UTF8) or min(dims) < 0:
            raise self.fail(where, at, f"an array with dimensions {dims} or a name of type {name_type}")
        name = buffer[name_at : name_at + name_bytes].decode("ascii", "replace")
        if wanted is not None and name not in wanted:
            return name
        data, size = parts[3:], math.prod(dims)
        if mclass in _MX_NUMERIC or mclass == _MX_CHAR:
            values, arrays = 1 + is_complex, 0  # the real part (and the imaginary part)
        elif mclass == _MX_SPARSE:
            values, arrays = 3 + is_complex, 0  # row indices, column starts, real (and imaginary) values
        elif mclass == _MX_CELL:
            values, arrays = 0, size
        elif (
            mclass == _MX_STRUCT
            and len(data) >= 2
            and data[0][:2] == (_MI_INT32, 4)
            and data[1][0] == _MI_INT8
        ):
            field_length = struct.unpack_from(self.order + "i", buffer, data[0][2])[0]
            fields = data[1][1] // field_length if field_length > 0 else -1
            values, arrays = (
                2,
                fields * size,
            )  # field name length, field names; then the fields of each element
        else:
            kind = "a class" if mclass in (3, 16, 17) else "an unknown class"  # object, function, opaque
            raise self.fail(
                where, at, f"array {name!r} is of {kind} ({mclass}) this reader does not read", False
            )
        if len(data) != values + arrays:
            raise self.fail(
                where, at, f"array {name!r} ({dims}) has {len(data)} data elements, not {values + arrays}"
            )
        for k, (mdtype, size_bytes, data_at) in enumerate(data):
            if k >= values and mdtype == _MI_MATRIX:
                if size_bytes:  # an empty nested array has no header
                    self.array(buffer, data_at, size_bytes, where, None)
            elif k >= values or mdtype not in _V5_DATA_TYPES:
                raise self.fail(where, data_at, f"array {name!r} holds an element of unknown type {mdtype}")
        return name


def _check_v5_elements(path: Path, wanted: Sequence[str]) -> None:
    """Refuse a v5 file whose variables ``wanted`` scipy could not read safely (see :class:`_V5Walk`)."""
    data = path.read_bytes()
    walk = _V5Walk(path, data)
    for mdtype, count, at in walk.elements(data, HEADER_BYTES, len(data), True, ""):
        buffer, where = data, ""
        if mdtype == _MI_COMPRESSED:
            try:
                buffer = zlib.decompressobj().decompress(data[at : at + count])
            except zlib.error as err:
                raise walk.fail(
                    "", at - 8, f"a compressed variable that does not decompress ({err})"
                ) from None
            where = f"compressed variable at byte {at - 8}, "
            mdtype, count, at = (walk.elements(buffer, 0, len(buffer), True, where) or [(0, 0, 0)])[0]
        if mdtype != _MI_MATRIX or count == 0:
            raise walk.fail(where, at - 8, f"a variable of element type {mdtype} (expected an array)")
        walk.array(buffer, at, count, where, wanted)


def load_mat_v5(path: Path, keys: Sequence[str], *, dataset: str = "This dataset") -> dict[str, Any]:
    """Variables ``keys`` of a MATLAB v5/v7 (or v4) file via ``scipy.io.loadmat``, MATLAB-shaped.

    Raises like :func:`load_mat_v73` (missing file, wrong version, missing key).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDownloadError(f"MATLAB file not found: {path}")
    if _check_version(path, ("v5", "v4"), dataset, "MATLAB v5") == "v5":
        _check_v5_elements(path, keys)
    try:
        import scipy.io
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading MATLAB v5 files needs scipy: pip install scipy") from err
    try:
        contents = scipy.io.loadmat(path, variable_names=list(keys), squeeze_me=False, chars_as_strings=True)
    except Exception as err:  # scipy raises assorted errors on corrupt files
        raise DataFormatError(f"{path}: could not read this MATLAB v5 file ({err})") from err
    for key in keys:
        if key not in contents:
            try:
                present = [name for name, _, _ in scipy.io.whosmat(path)]
            except Exception:  # noqa: BLE001 - a later variable is damaged: name none
                present = ["(the variable list is damaged)"]
            raise _missing_key(path, key, present)
    return {key: _convert_v5(contents[key]) for key in keys}


def load_mat(path: Path, keys: Sequence[str], *, dataset: str = "This dataset") -> dict[str, Any]:
    """Variables of a ``.mat`` file of either version (v4/v5 via scipy, v7.3 via h5py), MATLAB-shaped."""
    path = Path(path)
    if not path.is_file():
        raise MissingDownloadError(f"MATLAB file not found: {path}")
    version = _check_version(path, ("v4", "v5", "v7.3", "hdf5"), dataset, "MATLAB v5 or v7.3")
    if version in ("v7.3", "hdf5"):
        return load_mat_v73(path, keys, dataset=dataset)
    return load_mat_v5(path, keys, dataset=dataset)
