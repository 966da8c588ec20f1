"""MATLAB file helpers: version detection, v7.3 (HDF5) and v5 loading, errors that name file and version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")

from pipnet_lit.datasets.readers.matlab import (  # noqa: E402
    MatCellImage,
    load_mat,
    load_mat_v5,
    load_mat_v73,
    load_mat_v73_cell_item,
    mat_v73_cell_shapes,
    mat_version,
)
from pipnet_lit.datasets.records import DataFormatError, MissingDownloadError  # noqa: E402
from pipnet_lit.synthetic.raw.cofw import write_mat_v73  # noqa: E402


def rgb_image(h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 whose every pixel is distinct per channel (any transposition changes it)."""
    return (np.arange(h * w * 3).reshape(h, w, 3) % 251).astype(np.uint8)


@pytest.fixture
def v73_file(tmp_path) -> Path:
    return write_mat_v73(
        tmp_path / "sample.mat",
        {
            "images": [rgb_image(5, 7), rgb_image(6, 4)[:, :, 0]],
            "boxes": np.array([[1.5, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]]),
            "ints": np.array([[-3, 7]], dtype=np.int16),
            "flags": np.array([[True, False, True]]),
            "label": "COFW test",
        },
    )


def test_v73_writer_lays_out_the_file_as_matlab_does(v73_file):
    """Checked with raw h5py and raw bytes, not through the loader: header, column-major axes, refs."""
    raw = v73_file.read_bytes()
    assert raw[:19] == b"MATLAB 7.3 MAT-file"
    assert raw[124:128] == b"\x00\x02IM"  # version 0x0200, endian indicator
    assert raw[512:520] == b"\x89HDF\r\n\x1a\n"  # HDF5 after the 512-byte user block
    with h5py.File(v73_file, "r") as f:
        assert f["boxes"].shape == (4, 3) and f["boxes"].attrs["MATLAB_class"] == b"double"
        assert f["boxes"][0, 1] == 5.0 and f["boxes"][1, 0] == 2.0  # MATLAB boxes(2,1) = 5, boxes(1,2) = 2
        cell = f["images"]
        assert cell.shape == (1, 2) and cell.attrs["MATLAB_class"] == b"cell"
        first = f[cell[0, 0]]
        assert first.name.startswith("/#refs#/") and first.shape == (3, 7, 5)  # H x W x 3 -> 3 x W x H
        assert first[2, 6, 4] == rgb_image(5, 7)[4, 6, 2]
        assert f[cell[0, 1]].shape == (4, 6)
        assert f["label"].attrs["MATLAB_class"] == b"char"


def test_v73_round_trip_returns_matlab_shapes(v73_file):
    data = load_mat_v73(v73_file, ["images", "boxes", "ints", "flags", "label"])
    image, gray = data["images"]
    assert image.shape == (5, 7, 3) and np.array_equal(image, rgb_image(5, 7))
    assert gray.shape == (6, 4) and np.array_equal(gray, rgb_image(6, 4)[:, :, 0])
    assert data["boxes"].shape == (3, 4) and data["boxes"][1, 0] == 5.0 and data["boxes"][0, 0] == 1.5
    assert data["ints"].dtype == np.int16 and data["ints"].tolist() == [[-3, 7]]
    assert data["flags"].dtype == bool and data["flags"].tolist() == [[True, False, True]]
    assert data["label"] == "COFW test"


def test_v73_loader_reads_a_file_written_without_our_writer(tmp_path):
    """A hand-built MATLAB-layout HDF5 file (a 2 x 3 x 3 image, a 2 x 1 cell): the loader transposes back."""
    path = tmp_path / "hand.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        stored = np.arange(18, dtype=np.uint8).reshape(3, 3, 2)  # HDF5 (channel, col, row)
        image = refs.create_dataset("b", data=stored)
        image.attrs["MATLAB_class"] = np.bytes_("uint8")
        scalar = refs.create_dataset("c", data=np.array([[42.0]]))
        scalar.attrs["MATLAB_class"] = np.bytes_("double")
        cell = f.create_dataset("C", data=np.array([[image.ref, scalar.ref]], dtype=h5py.ref_dtype))
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: test".ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")
    assert mat_version(path) == "v7.3"
    loaded_image, loaded_scalar = load_mat_v73(path, ["C"])["C"]
    assert loaded_image.shape == (2, 3, 3)
    # MATLAB image(row, col, channel) == stored[channel, col, row]
    assert loaded_image[1, 2, 0] == stored[0, 2, 1] and loaded_image[0, 1, 2] == stored[2, 1, 0]
    assert loaded_scalar.tolist() == [[42.0]]
    assert mat_v73_cell_shapes(path, "C") == [(2, 3, 3), (1, 1)]


def test_cell_items_are_read_one_at_a_time(v73_file):
    assert mat_v73_cell_shapes(v73_file, "images") == [(5, 7, 3), (6, 4)]
    assert np.array_equal(load_mat_v73_cell_item(v73_file, "images", 1), rgb_image(6, 4)[:, :, 0])
    with pytest.raises(DataFormatError, match="has 2 entries, no entry 3"):
        load_mat_v73_cell_item(v73_file, "images", 2)
    with pytest.raises(DataFormatError, match="'boxes' is not a cell array"):
        mat_v73_cell_shapes(v73_file, "boxes")


def test_mat_cell_image_loads_bgr_and_has_a_cheap_identity(v73_file):
    color = MatCellImage(v73_file, "images", 0, key="sub/sample.mat")
    bgr = color.load()
    assert bgr.shape == (5, 7, 3) and np.array_equal(bgr, rgb_image(5, 7)[:, :, ::-1])
    gray = MatCellImage(v73_file, "images", 1).load()
    assert gray.shape == (6, 4, 3) and all(
        np.array_equal(gray[:, :, c], rgb_image(6, 4)[:, :, 0]) for c in range(3)
    )
    assert color.identity() == f"sub/sample.mat:{v73_file.stat().st_size}:images[0]"
    assert color.identity() != MatCellImage(v73_file, "images", 1, key="sub/sample.mat").identity()
    assert color.describe().endswith("sample.mat images{1}")


def test_version_detection(tmp_path, v73_file):
    v5 = tmp_path / "v5.mat"
    scipy_io.savemat(v5, {"a": np.eye(2)})
    v4 = tmp_path / "v4.mat"
    scipy_io.savemat(v4, {"a": np.eye(2)}, format="4")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["a"] = np.eye(2)
    text = tmp_path / "notes.mat"
    text.write_text("this is not a MATLAB file at all, just some text\n")
    assert mat_version(v73_file) == "v7.3"
    assert mat_version(v5) == "v5"
    assert mat_version(v4) == "v4"
    assert mat_version(plain) == "hdf5"
    assert mat_version(text) == "unknown"
    with pytest.raises(MissingDownloadError, match="gone.mat"):
        mat_version(tmp_path / "gone.mat")


def test_wrong_version_errors_say_which_version_is_needed(tmp_path, v73_file):
    v5 = tmp_path / "COFW_train_color.mat"
    scipy_io.savemat(v5, {"IsTr": np.eye(2)})
    with pytest.raises(DataFormatError) as err:
        load_mat_v73(v5, ["IsTr"], dataset="COFW")
    message = str(err.value)
    assert "COFW needs the MATLAB v7.3 (HDF5) file COFW_train_color.mat as published" in message
    assert "is MATLAB v5" in message and str(v5) in message
    with pytest.raises(DataFormatError, match=r"AFLW needs the MATLAB v5 file sample.mat .* is MATLAB v7.3"):
        load_mat_v5(v73_file, ["boxes"], dataset="AFLW")
    text = tmp_path / "x_points.mat"
    text.write_text("plain text here, no MATLAB header")
    with pytest.raises(DataFormatError, match=r"COFW-68 needs the MATLAB v5 or v7.3 file x_points.mat"):
        load_mat(text, ["Points"], dataset="COFW-68")


def test_missing_keys_and_files(tmp_path, v73_file):
    with pytest.raises(
        DataFormatError, match=r"no variable 'IsT'.*\['boxes', 'flags', 'images', 'ints', 'label'\]"
    ):
        load_mat_v73(v73_file, ["IsT"])
    v5 = tmp_path / "v5.mat"
    scipy_io.savemat(v5, {"bbox": np.eye(2), "data": np.ones((1, 3))})
    with pytest.raises(DataFormatError, match=r"no variable 'ra'.*\['bbox', 'data'\]"):
        load_mat_v5(v5, ["bbox", "ra"])
    for loader in (load_mat_v73, load_mat_v5, load_mat):
        with pytest.raises(MissingDownloadError, match="missing.mat"):
            loader(tmp_path / "missing.mat", ["a"])


def test_v5_loader_keeps_matlab_shapes_and_squeezes_cells(tmp_path):
    path = tmp_path / "info.mat"
    names = np.empty((3, 1), dtype=object)
    names[:, 0] = ["0/image00002.jpg", "2/image00004.jpg", "3/image00006.jpg"]
    scipy_io.savemat(
        path,
        {
            "bbox": np.arange(8.0).reshape(2, 4),
            "ra": np.array([[3, 1, 2]], dtype=np.int16),
            "nameList": names,
            "title": "AFLW",
        },
    )
    data = load_mat_v5(path, ["bbox", "ra", "nameList", "title"])
    assert data["bbox"].shape == (2, 4) and data["bbox"][1, 0] == 4.0
    assert data["ra"].shape == (1, 3) and data["ra"].dtype == np.int16
    assert data["nameList"] == ["0/image00002.jpg", "2/image00004.jpg", "3/image00006.jpg"]
    assert data["title"] == "AFLW"


def test_load_mat_reads_both_versions_the_same(tmp_path):
    points = np.array([[10.5, 20.0], [30.0, 40.25], [-2.0, 50.0]])
    v5 = tmp_path / "v5.mat"
    scipy_io.savemat(v5, {"Points": points, "bboxes": np.array([[1, 2, 3, 4]], dtype=np.int16)})
    v73 = write_mat_v73(
        tmp_path / "v73.mat", {"Points": points, "bboxes": np.array([[1, 2, 3, 4]], dtype=np.int16)}
    )
    a, b = load_mat(v5, ["Points", "bboxes"]), load_mat(v73, ["Points", "bboxes"])
    assert np.array_equal(a["Points"], points) and np.array_equal(b["Points"], points)
    assert a["bboxes"].dtype == b["bboxes"].dtype == np.int16
    assert a["bboxes"].tolist() == b["bboxes"].tolist() == [[1, 2, 3, 4]]
