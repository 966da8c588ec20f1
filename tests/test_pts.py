"""iBUG .pts reading and writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipnet_lit.datasets.pts import PtsFormatError, read_pts, write_pts


def _write(tmp_path: Path, text: str, name: str = "face.pts", newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def _pts_text(points: list[tuple[str, str]], n: int | str | None = None) -> str:
    n = len(points) if n is None else n
    body = "".join(f"{x} {y}\n" for x, y in points)
    return f"version: 1\nn_points: {n}\n{{\n{body}}}\n"


def test_reads_values_exactly(tmp_path: Path) -> None:
    path = _write(tmp_path, _pts_text([("1283.598566", "276.387616"), ("-3.5", "7"), ("0.25", "1e2")]))
    pts = read_pts(path)
    assert pts.dtype == np.float64 and pts.shape == (3, 2)
    np.testing.assert_array_equal(pts, [[1283.598566, 276.387616], [-3.5, 7.0], [0.25, 100.0]])


def test_tolerates_crlf_whitespace_and_trailing_blank_lines(tmp_path: Path) -> None:
    text = "version: 1\nn_points:  2\n{ \n\t10.5   20.25 \n 30 40\t\n}\n\n  \n\n"
    path = _write(tmp_path, text, newline="\r\n")
    np.testing.assert_array_equal(read_pts(path), [[10.5, 20.25], [30.0, 40.0]])
    no_final_newline = _write(tmp_path, "version: 1\nn_points: 1\n{\n1 2\n}", name="b.pts")
    np.testing.assert_array_equal(read_pts(no_final_newline), [[1.0, 2.0]])


def test_round_trip_exact_and_with_decimals(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 2000, (68, 2))
    write_pts(tmp_path / "a.pts", pts)
    np.testing.assert_array_equal(read_pts(tmp_path / "a.pts"), pts)
    write_pts(tmp_path / "b.pts", pts, decimals=3)
    np.testing.assert_allclose(read_pts(tmp_path / "b.pts"), pts, atol=5e-4 + 1e-9, rtol=0)
    lines = (tmp_path / "b.pts").read_text().split("\n")
    assert lines[:3] == ["version: 1", "n_points: 68", "{"] and lines[-2:] == ["}", ""]
    assert lines[3] == f"{pts[0, 0]:.3f} {pts[0, 1]:.3f}"


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        ("n_points: 2\n{\n1 2\n3 4\n}\n", 1, "version: 1"),
        ("version: 1\n{\n1 2\n}\n", 2, "n_points: 68"),
        ("version: 1\nn_points: sixty\n{\n1 2\n}\n", 2, "n_points must be an integer"),
        ("version: 1\nn_points: 2\n1 2\n3 4\n}\n", 3, "opening brace"),
        ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", 6, "after 2 points; n_points says 3"),
        ("version: 1\nn_points: 1\n{\n1 2\n3 4\n}\n", 5, "more points than n_points (1)"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 x4\n}\n", 5, "non-numeric coordinate 'x4'"),
        ("version: 1\nn_points: 2\n{\n1 2\n3\n}\n", 5, "expected two numbers"),
        ("version: 1\nn_points: 2\n{\n1 2\nnan 4\n}\n", 5, "not finite"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", 6, "closing brace"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 4\n)\n", 6, "closing brace"),
        ("version: 1\nn_points: 1\n{\n1 2\n}\nextra\n", 6, "after the closing brace"),
        ("", 1, "empty file"),
    ],
)
def test_format_errors_name_file_line_and_expectation(
    tmp_path: Path, text: str, line: int, phrase: str
) -> None:
    path = _write(tmp_path, text, name="bad_face.pts")
    with pytest.raises(PtsFormatError) as info:
        read_pts(path)
    message = str(info.value)
    assert f"bad_face.pts:{line}:" in message
    assert phrase in message
    assert isinstance(info.value, ValueError)


def test_binary_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "img.pts"
    path.write_bytes(b"\xff\xd8\xff\xe0 jpeg")
    with pytest.raises(PtsFormatError, match="img.pts"):
        read_pts(path)


def test_write_rejects_bad_points(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"shape \(L, 2\)"):
        write_pts(tmp_path / "a.pts", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="point 1 is not finite"):
        write_pts(tmp_path / "a.pts", np.array([[1.0, 2.0], [np.nan, 1.0]]))
    assert not (tmp_path / "a.pts").exists()
