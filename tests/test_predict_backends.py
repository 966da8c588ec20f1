"""``python -m pipnet_lit.predict`` with exported runtimes, video tracking, and a fast ``--help``.

One small model serves every test: ResNet-18, stride 32, 64 px, trained here for 60 Adam steps on jittered
300W-style crops (landmark box x 1.1) of synthetic faces, so that its landmarks follow a face within a crop
(its mean error on shifted crops is about half the mean face's), which tracking needs. Its TorchScript,
ONNX, OpenVINO and ONNX Runtime int8 exports run through ``predict`` on two images and a 12-frame video of a
moving face; an oracle detector (the frame's true 300W crop box, the frame told by a grey patch in its
corner) makes every run crop the same boxes.

Tolerances (160 px frames, a face of about 110 px landmark-box diagonal, the "face size" below; the JSON
rounds landmarks to 1e-3 px). Measured when written in brackets:
- fp32 backends against eager: landmarks within 0.02 px (0.001: the rounding), identical crop boxes, tracked
  ones included, and the same detector / tracking frames;
- ONNX Runtime int8 and eager bf16 against eager fp32: mean landmark difference within 1 % of the face size,
  largest within 3 % (int8: 0.07 % / 0.28 % on the images, 0.23 % / 1.3 % on the tracked video; bf16:
  0.02 % / 0.07 %, 0.19 % / 1.4 %);
- tracking against per-frame detection (same model, eager, the face moving 22 px over 11 tracked frames):
  mean landmark difference per frame within 4 % of the face size (1 % growing to about 2 %); the tracked NME
  against the truth within 1.5x the per-frame detection's + 1 % (5.0 % vs 4.8 %).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipnet_lit.datasets.geometry import CropBox, box_from_points_300w, crop_and_resize
from pipnet_lit.inference import Predictor, preprocess
from pipnet_lit.models import PIPNet
from pipnet_lit.pip import build_neighbors, compute_meanface, encode_targets, pip_loss
from pipnet_lit.predict import PredictConfig, main, parse_config, predict
from pipnet_lit.synthetic import render_face, sample_face_params

#: one worker builds this module's shared models (its fixtures cost ~25 s each) under `--dist loadgroup`
pytestmark = pytest.mark.xdist_group("predict_backends")

SIZE = 64  # model input
FRAME = 160  # video frames and images, square
FRAMES = 12
PATCH = 16  # the corner patch whose grey level tells the oracle detector which frame it sees
FP32_TOL = 0.02  # px
LOW_PRECISION_TOL = (0.01, 0.03)  # mean, max landmark difference / face size
TRACK_TOL = 0.04  # mean landmark difference / face size, per frame


# -- the model --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """PyTorch on one thread in this module (restored after): as fast for these tiny models, and no collapse
    of its thread pool when other work shares the cores. The exported runtimes get ``threads=1``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _crop(image: np.ndarray, points: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, ...]:
    """The 300W crop (landmark box x 1.1) of a face, shifted and scaled at random when ``rng`` is given."""
    h, w = image.shape[:2]
    box = box_from_points_300w(points, w, h, 1.1)
    if rng is not None:
        bw, bh = box.x1 - box.x0, box.y1 - box.y0
        scale, (dx, dy) = rng.uniform(0.9, 1.1), rng.uniform(-0.08, 0.08, 2)
        cx, cy = (box.x0 + box.x1) / 2 + dx * bw, (box.y0 + box.y1) / 2 + dy * bh
        bw, bh = bw * scale, bh * scale
        box = CropBox(
            int(max(cx - bw / 2, 0)),
            int(max(cy - bh / 2, 0)),
            int(min(cx + bw / 2, w)),
            int(min(cy + bh / 2, h)),
        )
    frac = (points - [box.x0, box.y0]) / [box.x1 - box.x0, box.y1 - box.y0]
    return crop_and_resize(image, box, SIZE), frac


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    rng = np.random.default_rng(0)
    faces = [render_face(sample_face_params(rng, "clean", 112, face_fraction=(0.45, 0.6))) for _ in range(64)]
    meanface = compute_meanface(np.stack([_crop(im, pts, None)[1] for im, pts in faces]))
    torch.manual_seed(0)
    net = PIPNet("resnet18", 68, 10, 32, input_size=SIZE)
    neighbors = build_neighbors(meanface, 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(60):
        batch = [_crop(*faces[int(i)], rng) for i in rng.integers(0, len(faces), 16)]
        x = preprocess(np.stack([b[0] for b in batch]))
        y = torch.as_tensor(np.stack([b[1] for b in batch]), dtype=torch.float32)
        loss = pip_loss(net(x), encode_targets(y, neighbors, (2, 2))).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predictor = Predictor.from_network(net.eval(), meanface, num_nb=10, input_size=SIZE)
    folder = tmp_path_factory.mktemp("model")
    calibration = preprocess(np.stack([_crop(im, pts, None)[0] for im, pts in faces[:16]]))
    return {"ckpt": predictor.save(folder / "model.ckpt", dataset="300w"), "graph": predictor.graph,
            "calibration": calibration, "folder": folder}  # fmt: skip


@pytest.fixture(scope="module")
def exports(trained) -> dict[str, Path]:
    """TorchScript, ONNX (fp32 and int8) and OpenVINO (fp32) files of the trained model."""
    from pipnet_lit.export import export_onnx, export_openvino, export_torchscript, quantize_onnx

    folder, graph = trained["folder"], trained["graph"]
    files = {"torchscript": export_torchscript(graph, folder / "model.pt")}
    if _has("onnxruntime", "onnxscript"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            files["onnxruntime"] = export_onnx(graph, folder / "model.onnx")
            files["onnxruntime_int8"] = quantize_onnx(
                files["onnxruntime"], folder / "int8.onnx", trained["calibration"]
            )
        if _has("openvino"):
            files["openvino"] = export_openvino(graph, folder / "model.xml", onnx_path=files["onnxruntime"])
    return files


def _has(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


# -- the media: two images and a video of a moving face -----------------------------------------------------
class OracleDetector:
    """The true 300W crop box of the face (the crop rule is the identity): the image's index is the grey level
    of its top-left patch / 16, its box the row ``index`` of ``boxes`` (an .npy file)."""

    def __init__(self, boxes: str) -> None:
        from pipnet_lit.detect import CropRule

        self.boxes = np.load(boxes)
        self.crop_rule = CropRule()
        self.calls = 0

    def detect(self, image_bgr: np.ndarray):
        from pipnet_lit.detect import Detections

        index = int(round(float(image_bgr[:PATCH, :PATCH].mean()) / 16))
        return Detections(self.boxes[index : index + 1].astype(float), np.array([0.9]))


def _mark(image: np.ndarray, index: int) -> np.ndarray:
    image = image.copy()
    image[:PATCH, :PATCH] = 16 * index
    return image


def _true_box(points: np.ndarray) -> list[int]:
    box = box_from_points_300w(points, FRAME, FRAME, 1.1)
    return [box.x0, box.y0, box.x1, box.y1]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """A 12-frame mp4 of a face moving right (2 px a frame) and turning (1.5 deg a frame), the true landmarks
    of each frame, two still images (their own boxes file) and the oracle's arguments."""
    folder = tmp_path_factory.mktemp("media")
    base = sample_face_params(np.random.default_rng(4), "clean", FRAME, face_fraction=(0.48, 0.5))
    _, points = render_face(base)
    centre = (points.min(0) + points.max(0)) / 2
    base = dataclasses.replace(
        base, cx=base.cx + FRAME / 2 - centre[0] - 12, cy=base.cy + FRAME / 2 - centre[1]
    )
    video = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (FRAME, FRAME))
    truth = []
    for i in range(FRAMES):
        image, points = render_face(dataclasses.replace(base, cx=base.cx + 2.0 * i, roll=base.roll + 1.5 * i))
        writer.write(_mark(image, i))
        truth.append(points)
    writer.release()
    np.save(folder / "video_boxes.npy", np.array([_true_box(p) for p in truth], float))
    images = folder / "images"
    images.mkdir()
    boxes = []
    rng = np.random.default_rng(7)
    for i in range(2):
        image, points = render_face(sample_face_params(rng, "clean", FRAME, face_fraction=(0.45, 0.55)))
        cv2.imwrite(str(images / f"face{i}.png"), _mark(image, i))
        boxes.append(_true_box(points))
    np.save(folder / "image_boxes.npy", np.array(boxes, float))
    oracle = "detector=test_predict_backends:OracleDetector"
    return {
        "truth": np.stack(truth),
        "video": [f"input={video}", oracle, f"detector_args.boxes={folder}/video_boxes.npy"],
        "images": [f"input={images}", oracle, f"detector_args.boxes={folder}/image_boxes.npy"],
    }


def _predict(args: list[str], out: Path) -> dict:
    """A run's predictions.json (`predict` itself: a failure raises with its message)."""
    predict(parse_config([*args, f"output={out}", "progress=false"]))
    return json.loads((out / "predictions.json").read_text())


def _error(args: list[str], capsys, tmp_path: Path) -> tuple[int, str]:
    code = main([*args, f"output={tmp_path / 'err'}", "progress=false"])
    return code, capsys.readouterr().err


def _faces(data: dict) -> list[dict]:
    """Every face of a run, images or frames, in order."""
    return [face for item in data.get("images", data.get("frames", [])) for face in item["faces"]]


def _face_size(landmarks: np.ndarray) -> float:
    span = landmarks.max(0) - landmarks.min(0)
    return float(np.hypot(*span))


@pytest.fixture(scope="module")
def eager(trained, media, tmp_path_factory) -> dict:
    """The eager fp32 runs every backend is compared with: the images, and the video tracked (the default
    detect_every=5)."""
    out = tmp_path_factory.mktemp("eager")
    ckpt = f"ckpt={trained['ckpt']}"
    return {what: _predict([ckpt, *media[what]], out / what) for what in ("images", "video")}


# -- backends ---------------------------------------------------------------------------------------------
BACKENDS = [
    pytest.param("torchscript", "fp32", id="torchscript"),
    pytest.param("onnxruntime", "fp32", id="onnxruntime"),
    pytest.param("openvino", "fp32", id="openvino"),
    pytest.param("onnxruntime_int8", "int8", id="onnxruntime-int8"),
    pytest.param("eager", "bf16", id="eager-bf16"),
]


@pytest.mark.parametrize(("backend", "precision"), BACKENDS)
def test_backends_agree_with_eager_on_images_and_video(
    backend, precision, trained, exports, media, eager, tmp_path
):
    args = [f"ckpt={trained['ckpt']}", f"precision={precision}", "threads=1"]
    if backend == "eager":
        from pipnet_lit.runtime import supports_bf16

        if not supports_bf16("eager", "cpu"):
            pytest.skip("this CPU has no bf16")
    elif backend not in exports:
        pytest.skip(f"{backend} is not installed")
    else:
        args.append(f"model={exports[backend]}")  # the backend from the suffix
    for what in ("images", "video"):
        data = _predict([*args, *media[what]], tmp_path / what)
        reference = eager[what]
        expected_backend = backend.split("_")[0]
        assert (data["backend"], data["precision"]) == (expected_backend, precision)
        assert data["model"] == (str(exports[backend]) if backend != "eager" else None)
        faces, ref_faces = _faces(data), _faces(reference)
        assert len(faces) == len(ref_faces) == (2 if what == "images" else FRAMES)
        got = np.array([f["landmarks"] for f in faces])
        ref = np.array([f["landmarks"] for f in ref_faces])
        if precision == "fp32":
            assert [f["crop_box"] for f in faces] == [f["crop_box"] for f in ref_faces]
            np.testing.assert_allclose(got, ref, atol=FP32_TOL, rtol=0)
            np.testing.assert_allclose([f["landmark_scores"] for f in faces],
                                       [f["landmark_scores"] for f in ref_faces], atol=1e-3)  # fmt: skip
        else:
            sizes = np.array([_face_size(r) for r in ref])[:, None]
            error = np.linalg.norm(got - ref, axis=-1) / sizes
            assert error.mean() < LOW_PRECISION_TOL[0] and error.max() < LOW_PRECISION_TOL[1], (
                error.mean(), error.max())  # fmt: skip
        if what == "video":
            assert [f["boxes_from"] for f in data["frames"]] == [f["boxes_from"] for f in reference["frames"]]


def test_backend_and_precision_errors(trained, exports, tmp_path, capsys, media):
    ckpt, inputs = f"ckpt={trained['ckpt']}", media["images"]
    script = f"model={exports['torchscript']}"
    cases = [
        (["backend=onnxruntime"], "backend=onnxruntime runs an exported model: add model=<file>.onnx"),
        ([script, "backend=eager"], "is an exported torchscript model, but backend=eager"),
        ([script, "backend=openvino"], "is a torchscript model (suffix .pt), not one for backend=openvino"),
        ([f"model={trained['ckpt']}"], "is a checkpoint: pass it as ckpt="),
        ([f"model={tmp_path / 'model.bin'}"], "cannot tell its backend from the suffix"),
        ([f"model={tmp_path / 'none.pt'}"], "none.pt does not exist"),
        ([script, "precision=int8"], "precision=int8 is not available with backend=torchscript"),
        ([script, "spinning=true"], "spinning=true applies to backend=onnxruntime only"),
        (["spinning=true"], "applies to backend=onnxruntime only (this run's backend is eager)"),
        (["precision=int8"], "precision=int8 is not available with backend=eager"),
        (["threads=0"], "threads must be >= 1"),
        (["detect_every=0"], "detect_every must be >= 1"),
    ]
    if "onnxruntime" in exports:
        onnx, int8 = exports["onnxruntime"], exports["onnxruntime_int8"]
        cases += [
            ([f"model={onnx}", "precision=bf16"], "precision=bf16 is not available with backend=onnxruntime"),
            ([f"model={onnx}", "precision=int8"], "is an fp32 export; precision=int8 needs an int8 one"),
            ([f"model={int8}"], "is an int8 export: run it with precision=int8"),
            ([f"model={onnx}", "device=cuda"], "backend=onnxruntime runs on the CPU"),
        ]
    for extra, message in cases:
        code, err = _error([ckpt, *inputs, *extra], capsys, tmp_path)
        assert code == 1 and message in err, (extra, err)
    # a misspelt backend or precision is an option error, with the choices
    code, err = _error([ckpt, *inputs, "backend=onnx"], capsys, tmp_path)
    assert code == 2 and "'onnx' is not one of eager, torchscript, onnxruntime, openvino" in err
    code, err = _error([ckpt, *inputs, "precision=fp16"], capsys, tmp_path)
    assert code == 2 and "'fp16' is not one of fp32, bf16, int8" in err


def test_predict_turns_onnxruntime_spinning_off_unless_asked(trained, exports, monkeypatch):
    """Between two landmark calls predict detects, draws and encodes: spinning ONNX Runtime threads would take
    the cores from that work (README, "Predict"), so predict asks for none unless told."""
    if "onnxruntime" not in exports:
        pytest.skip("onnxruntime is not installed")
    import pipnet_lit.runtime as runtime_module
    from pipnet_lit.predict import load_landmark_model, parse_config

    sessions = []
    real = runtime_module.OnnxRuntime.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        sessions.append(self.session)

    monkeypatch.setattr(runtime_module.OnnxRuntime, "__init__", spy)
    base = [f"ckpt={trained['ckpt']}", "input=unused.png", f"model={exports['onnxruntime']}", "threads=1"]
    for extra, entry in (([], "0"), (["spinning=true"], "1")):
        load_landmark_model(parse_config([*base, *extra]), "cpu")
        options = sessions[-1].get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry, extra
    load_landmark_model(parse_config([*base, "spinning=null"]), "cpu")  # the runtime's own default
    with pytest.raises(RuntimeError, match="does not have configuration"):
        sessions[-1].get_session_options().get_session_config_entry("session.intra_op.allow_spinning")


def test_exported_model_of_another_network_is_refused(trained, tmp_path, capsys, media):
    from pipnet_lit.export import export_torchscript
    from pipnet_lit.landmark_graph import LandmarkGraph

    net = PIPNet("resnet18", 68, 5, 32, input_size=SIZE)  # 5 neighbours where the checkpoint has 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = LandmarkGraph(net, np.random.default_rng(0).uniform(0.1, 0.9, (68, 2))).eval()
    other = export_torchscript(graph, tmp_path / "other.pt")
    code, err = _error([f"ckpt={trained['ckpt']}", *media["images"], f"model={other}"], capsys, tmp_path)
    assert code == 1 and f"model={other} does not match ckpt=" in err and "num_nb 5 vs 10" in err
    code, err = _error([f"ckpt={trained['ckpt']}", *media["images"], f"model={other}", "scheme=wflw98"],
                       capsys, tmp_path)  # fmt: skip
    assert code == 1 and "98 are expected" in err


# -- tracking ---------------------------------------------------------------------------------------------
def test_tracked_boxes_agree_with_per_frame_detection(trained, media, eager, tmp_path):
    ckpt, video = f"ckpt={trained['ckpt']}", media["video"]
    every = _predict([ckpt, *video, "detect_every=1"], tmp_path / "every")
    tracked = _predict([ckpt, *video, "detect_every=100"], tmp_path / "tracked")
    assert [f["boxes_from"] for f in every["frames"]] == ["detector"] * FRAMES
    assert [f["boxes_from"] for f in tracked["frames"]] == ["detector"] + ["tracking"] * (FRAMES - 1)
    assert tracked["tracking"]["frames"] == {"detector": 1, "tracking": FRAMES - 1, "lost": 0}
    assert every["tracking"] is None and every["detect_every"] == 1 and tracked["detect_every"] == 100
    per_frame = np.array([f["landmarks"] for f in _faces(every)])
    carried = np.array([f["landmarks"] for f in _faces(tracked)])
    # a tracked frame's crop box is the previous frame's landmark box x 1.1 (the 300W training crop rule)
    for previous, face in zip(carried[:-1], _faces(tracked)[1:], strict=True):
        assert face["crop_box"] == _true_box(previous) == face["box"]
    sizes = np.array([_face_size(t) for t in media["truth"]])
    error = np.linalg.norm(carried - per_frame, axis=-1).mean(1) / sizes
    assert error.max() < TRACK_TOL, error.round(4)
    # against the truth: tracking stays about as accurate as detecting every frame (the face moves 22 px,
    # a quarter of its size: a box that did not follow it would be far off)
    truth = media["truth"]
    nme_every = (np.linalg.norm(per_frame - truth, axis=-1).mean(1) / sizes).mean()
    nme_tracked = (np.linalg.norm(carried - truth, axis=-1).mean(1) / sizes).mean()
    assert nme_tracked < 1.5 * nme_every + 0.01, (nme_tracked, nme_every)
    # default detect_every=5: the detector on frames 0, 5, 10 (the eager reference run)
    assert [i for i, f in enumerate(eager["video"]["frames"]) if f["boxes_from"] == "detector"] == [0, 5, 10]
    # a track that is always lost (no score reaches min_score) is re-detected on the same frame: the landmarks
    # are then the per-frame detection's
    lost = _predict([ckpt, *video, "detect_every=100", "tracking.min_score=1e9"], tmp_path / "lost")
    assert [f["boxes_from"] for f in lost["frames"]] == ["detector"] * FRAMES
    assert [f.get("tracking_lost", False) for f in lost["frames"]] == [False] + [True] * (FRAMES - 1)
    assert lost["tracking"]["frames"] == {"detector": FRAMES, "tracking": 0, "lost": FRAMES - 1}
    np.testing.assert_allclose(
        [f["landmarks"] for f in _faces(lost)], per_frame, atol=FP32_TOL
    )  # batch 1 vs 12


def test_tracker_loses_faces_that_leave_the_frame_or_score_low():
    from pipnet_lit.predict import TrackingConfig, _Tracker

    tracker = _Tracker(3, TrackingConfig())
    assert tracker.carried(100, 100) is None  # no face yet: detect
    face = {"landmarks": np.array([[20.0, 30.0], [60.0, 30.0], [40.0, 70.0]]), "score": 0.8,
            "landmark_scores": np.full(3, 0.9)}  # fmt: skip
    tracker.update([face], detected=True)
    carried = tracker.carried(100, 100)
    assert carried.crop_boxes.tolist() == [[18.0, 28.0, 62.0, 72.0]] and carried.scores.tolist() == [0.8]
    tracker.update([face], detected=False)
    tracker.update([face], detected=False)
    assert tracker.carried(100, 100) is None  # 3 frames since the detection: due again
    assert not tracker.lost([face], 100, 100)
    assert tracker.lost([{**face, "landmark_scores": np.full(3, 0.1)}], 100, 100)
    assert tracker.lost([{**face, "landmarks": face["landmarks"] + [70.0, 0.0]}], 100, 100)  # 2 of 3 outside
    tracker.update([{**face, "landmarks": face["landmarks"] + [200.0, 0.0]}], detected=True)
    assert tracker.carried(100, 100) is None  # an empty box: detect
    assert tracker.counts == {"detector": 2, "tracking": 2, "lost": 0}


def test_timing_entry_and_summary(eager, trained, media, tmp_path):
    timing = eager["video"]["timing"]
    assert timing["unit"] == "frames" and timing["count"] == FRAMES
    assert {"decode", "detect", "track", "landmarks", "draw", "encode"} <= set(timing["seconds"])
    assert all(v > 0 for v in timing["per_second"].values()) and timing["end_to_end_per_second"] > 0
    assert timing["calls"]["detect"] == 3 and timing["calls"]["decode"] == FRAMES + 1  # + the end
    assert eager["images"]["timing"]["unit"] == "images"
    cfg = parse_config([f"ckpt={trained['ckpt']}", *media["video"], f"output={tmp_path}", "progress=false"])
    summary = predict(cfg)
    summary.show_timing = True
    text = summary.message()
    assert "frames/s per stage: decode" in text and "end to end" in text
    assert "boxes: detector on 3 frame(s), tracked on 9 (0 lost track(s) re-detected)" in text


# -- start-up ---------------------------------------------------------------------------------------------
HEAVY = ("torch", "torchvision", "cv2", "onnxruntime", "openvino", "lightning", "hydra")


def test_help_and_option_errors_import_no_heavy_module():
    """--help and bad options answer before PyTorch, OpenCV or a runtime is imported."""
    script = f"""
import json, sys
from pipnet_lit.predict import main
codes = [main(["--help"]), main(["ckpt=a", "input=b", "backend=onnx"]), main(["input=b"]),
         main(["ckpt=a", "input=b", "batch_size=many"])]
print(json.dumps({{"codes": codes, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"codes": [0, 2, 2, 2], "heavy": []}
    # the module entry point too, as -X importtime sees it
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipnet_lit.predict", "--help"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and "backend=NAME" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


def test_option_names_match_the_runtime_and_inference_constants():
    from pipnet_lit.inference import DEFAULT_MAX_PIXELS
    from pipnet_lit.predict import Backend, Precision
    from pipnet_lit.runtime import BACKENDS, PRECISIONS

    assert PredictConfig(ckpt="a", input="b").max_pixels == DEFAULT_MAX_PIXELS
    assert typing.get_args(Backend) == BACKENDS
    assert set(typing.get_args(Precision)) == {p for choices in PRECISIONS.values() for p in choices}
