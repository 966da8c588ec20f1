"""Export (TorchScript, ONNX, OpenVINO) with decoding in the graph, int8 paths, runtimes and the command.

Parity: every exported fp32 model gives eager's landmarks to 1e-4 crop units, at batch 1 and 3 (the batch
is dynamic), on random weights and on a model trained here for a few steps on synthetic faces at 64 px.
int8: the quantized models run, keep the decode and the transposed convolution float, and change the
trained model's NME by little.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipnet_lit.cli import UsageError
from pipnet_lit.datasets.transforms import build_eval_transform
from pipnet_lit.export import (
    export_onnx,
    export_openvino,
    export_torchscript,
    quantize_onnx,
    read_onnx_metadata,
)
from pipnet_lit.export.command import calibration_crops, default_out, export, main, parse_args
from pipnet_lit.landmark_graph import LandmarkGraph, is_on
from pipnet_lit.metrics.functional import nme
from pipnet_lit.models import PIPNet
from pipnet_lit.pip import build_neighbors, compute_meanface, decode, encode_targets, pip_loss
from pipnet_lit.runtime import load_runtime
from pipnet_lit.synthetic import render_face, sample_face_params

#: one worker builds this module's shared models (its fixtures cost ~25 s each) under `--dist loadgroup`
pytestmark = pytest.mark.xdist_group("export")

REPO = Path(__file__).parents[1]
SIZE = 64
INTER_OCULAR = [[36], [45]]  # ibug68 outer eye corners
TOL = 1e-4  # crop units


def render(n: int, seed: int, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """n synthetic faces: crops (n, 3, S, S) normalized, landmarks (n, 68, 2) in [0, 1], the BGR images."""
    rng = np.random.default_rng(seed)
    transform = build_eval_transform(size)
    crops, landmarks, images = [], [], []
    for _ in range(n):
        image, points = render_face(sample_face_params(rng, "clean", size))
        crops.append(transform(image, points / size)[0])
        landmarks.append(torch.as_tensor(points / size, dtype=torch.float32))
        images.append(image)
    return torch.stack(crops), torch.stack(landmarks), images


def top2_gap(graph: LandmarkGraph, x: torch.Tensor) -> float:
    """Smallest gap between the best and second-best cell of any score map (ties make argmax ill-posed)."""
    with torch.no_grad():
        top = graph.net(x).score.flatten(2).topk(2, dim=2).values
    return float((top[..., 0] - top[..., 1]).min())


@pytest.fixture(scope="module")
def random_graph() -> LandmarkGraph:
    """Random weights, stride 32 (no deconvolution), 5 neighbours."""
    torch.manual_seed(1)
    net = PIPNet("resnet18", 68, 5, 32, input_size=SIZE)
    meanface = np.random.default_rng(1).uniform(0.1, 0.9, size=(68, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random mean face leaves a landmark without votes: fine here
        return LandmarkGraph(net, meanface).eval()


@pytest.fixture(scope="module")
def trained() -> dict:
    """ResNet-18 stride 16 (with the transposed convolution) trained 30 Adam steps on 48 synthetic faces."""
    crops, landmarks, images = render(48, seed=0)
    torch.manual_seed(0)
    net = PIPNet("resnet18", 68, 10, 16, input_size=SIZE)
    meanface = compute_meanface(landmarks.numpy())
    neighbors = build_neighbors(meanface, 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        idx = torch.randint(0, len(crops), (8,), generator=gen)
        loss = pip_loss(net(crops[idx]), encode_targets(landmarks[idx], neighbors, (4, 4))).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    graph = LandmarkGraph(net.eval(), meanface).eval()
    return {"graph": graph, "crops": crops, "landmarks": landmarks, "images": images, "losses": losses}


@pytest.fixture(scope="module")
def exports(random_graph, trained, tmp_path_factory) -> dict:
    """TorchScript, ONNX and OpenVINO fp32 files of both models."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    files = {}
    for name, graph in (("random", random_graph), ("trained", trained["graph"])):
        folder = tmp_path_factory.mktemp(name)
        onnx_path = export_onnx(graph, folder / "model.onnx")
        files[name] = {
            "torchscript": export_torchscript(graph, folder / "model.pt"),
            "onnxruntime": onnx_path,
        }
        try:
            import openvino  # noqa: F401

            files[name]["openvino"] = export_openvino(graph, folder / "model.xml", onnx_path=onnx_path)
        except ImportError:
            pass
    return files


# -- the graph is the pure functions -------------------------------------------------------------------
def test_graph_outputs_are_decode_of_the_network(random_graph):
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        neighbors = build_neighbors(random_graph.meanface.double(), 5)
    with torch.no_grad():
        outputs = random_graph.net(x)
        landmarks, scores = random_graph(x)
        own = LandmarkGraph(random_graph.net, random_graph.meanface, merge=False)(x)[0]
    assert landmarks.shape == (2, 68, 2) and scores.shape == (2, 68)
    assert torch.equal(landmarks, decode(outputs, neighbors))
    assert torch.equal(own, decode(outputs, neighbors, merge=False))
    assert torch.equal(scores, outputs.score.flatten(2).max(dim=2).values)
    assert not torch.equal(own, landmarks)  # the merge moved the points


def test_graph_neighbour_tables_follow_the_device_they_are_asked_for():
    mf = np.random.default_rng(1).uniform(0.1, 0.9, (68, 2))
    graph = LandmarkGraph(PIPNet("resnet18", 68, 5, 32, input_size=SIZE), mf)
    reference = build_neighbors(torch.as_tensor(mf), 5)
    here = graph.neighbors()
    assert here.indices.device.type == "cpu" and torch.equal(here.indices, reference.indices)
    moved = graph.neighbors(torch.device("meta"))  # as when Lightning moved the network to a GPU
    assert all(t.device.type == "meta" for t in (moved.indices, moved.reverse_index1, moved.reverse_index2))
    assert graph.device.type == "meta" and graph.meanface.device.type == "meta"  # kept there
    assert graph.meanface_cpu.device.type == "cpu"  # the float64 source never moves
    other = LandmarkGraph(PIPNet("resnet18", 68, 5, 32, input_size=SIZE), mf)
    same = other.neighbors("cpu")  # already there: the very tables, not copies
    assert is_on(torch.device("cpu"), "cpu") and not is_on(torch.device("cpu"), "meta")
    assert is_on(torch.device("cuda", 0), "cuda") and not is_on(torch.device("cuda", 0), "cuda:1")
    assert same.indices is other.nb_indices and same.max_len == reference.max_len
    assert torch.equal(same.reverse_index1, reference.reverse_index1)


def test_graph_rejects_a_mean_face_of_another_landmark_count():
    net = PIPNet("resnet18", 68, 5, 32, input_size=SIZE)
    with pytest.raises(ValueError, match=r"needs \(68, 2\)"):
        LandmarkGraph(net, np.zeros((5, 2)))


# -- fp32 parity --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["random", "trained"])
@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_exports_match_eager(model, batch, random_graph, trained, exports):
    graph = random_graph if model == "random" else trained["graph"]
    x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(10 + batch))
    if model == "trained":
        x = trained["crops"][:batch]
    assert top2_gap(graph, x) > 2e-5, "a near-tie in a score map: the comparison would be ill-posed"
    with torch.no_grad():
        ref_landmarks, ref_scores = graph(x)
    eager = load_runtime(graph).run(x)
    assert torch.allclose(eager[0], ref_landmarks, atol=TOL, rtol=0)
    backends = exports[model]
    assert {"torchscript", "onnxruntime"} <= set(backends)
    for backend, path in backends.items():
        runtime = load_runtime(path, num_threads=1)
        assert runtime.backend == backend and runtime.precision == "fp32"
        landmarks, scores = runtime.run(x)
        assert landmarks.shape == (batch, 68, 2) and scores.shape == (batch, 68), backend
        err = float((landmarks - ref_landmarks).abs().max())
        assert err <= TOL, f"{backend}: landmarks differ from eager by {err:.2e}"
        assert torch.allclose(scores, ref_scores, atol=1e-4, rtol=1e-4), backend
        assert torch.equal(runtime(x), landmarks)


def test_onnx_has_a_dynamic_batch_and_its_description(exports, trained):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(exports["trained"]["onnxruntime"]))
    (crops,) = model.graph.input
    dims = crops.type.tensor_type.shape.dim
    assert crops.name == "crops" and dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    assert [o.name for o in model.graph.output] == ["landmarks", "scores"]
    meta = read_onnx_metadata(exports["trained"]["onnxruntime"])
    assert meta["precision"] == "fp32" and meta["input_size"] == SIZE and meta["num_landmarks"] == 68
    assert (meta["backbone"], meta["net_stride"], meta["num_nb"], meta["merge"]) == ("resnet18", 16, 10, True)
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_openvino_fp32_runs_with_the_f32_precision_hint(exports):
    pytest.importorskip("openvino")
    runtime = load_runtime(exports["trained"]["openvino"])
    assert "32" in str(runtime.compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert runtime.metadata["precision"] == "fp32" and runtime.input_size == SIZE


# -- int8 ----------------------------------------------------------------------------------------------
def _nme(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(nme(pred.double(), target.double(), "inter_ocular", norm_indices=INTER_OCULAR).mean())


def _check_int8_close(runtime, trained) -> None:
    crops, landmarks = trained["crops"], trained["landmarks"]
    with torch.no_grad():
        ref = trained["graph"](crops)[0]
    pred = runtime(crops)
    ref_nme, int8_nme = _nme(ref, landmarks), _nme(pred, landmarks)
    assert int8_nme != ref_nme  # really quantized
    assert abs(int8_nme - ref_nme) / ref_nme <= 0.05, (ref_nme, int8_nme)
    assert float((pred - ref).abs().mean()) <= 0.01


@pytest.mark.slow
def test_onnxruntime_int8_keeps_decode_and_deconvolution_float(trained, exports, tmp_path):
    onnx = pytest.importorskip("onnx")
    assert trained["losses"][-1] < 0.8 * trained["losses"][0], "the fixture model did not train"
    path = quantize_onnx(exports["trained"]["onnxruntime"], tmp_path / "int8.onnx", trained["crops"][:16])
    model = onnx.load(str(path))
    producer = {out: node for node in model.graph.node for out in node.output}
    kinds = [node.op_type for node in model.graph.node]
    assert kinds.count("QuantizeLinear") >= 20 and kinds.count("DequantizeLinear") >= 40

    def fed_by_dequantize(node, slot: int) -> bool:
        source = producer.get(node.input[slot])
        return source is not None and source.op_type == "DequantizeLinear"

    (deconv,) = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert not fed_by_dequantize(deconv, 1)  # float weights: the deconvolution computes in fp32
    (argmax,) = [n for n in model.graph.node if n.op_type == "ArgMax"]
    assert not fed_by_dequantize(argmax, 0)
    assert sum(fed_by_dequantize(n, 1) for n in model.graph.node if n.op_type == "Conv") >= 20
    assert read_onnx_metadata(path)["precision"] == "int8"

    runtime = load_runtime(path, num_threads=1)
    assert runtime.precision == "int8"
    _check_int8_close(runtime, trained)
    with pytest.raises(ValueError, match="int8 model"):
        load_runtime(path, precision="fp32")


@pytest.mark.slow
def test_openvino_int8_quantizes_the_network_only(trained, exports, tmp_path):
    pytest.importorskip("nncf")
    graph = trained["graph"]
    onnx_path = exports["trained"]["onnxruntime"]
    path = export_openvino(graph, tmp_path / "int8.xml", trained["crops"][:16], onnx_path=onnx_path)
    runtime = load_runtime(path, num_threads=1)
    assert runtime.precision == "int8" and runtime.metadata["precision"] == "int8"
    model = runtime.compiled.get_runtime_model()
    kinds = [op.get_rt_info()["layerType"].astype(str) for op in model.get_ordered_ops()]
    assert kinds.count("Convolution") >= 20  # the network still runs as convolutions ...
    import openvino as ov

    source = ov.Core().read_model(str(path))
    ops = source.get_ordered_ops()
    assert sum(op.get_type_name() == "FakeQuantize" for op in ops) >= 20  # ... with int8 inputs
    decode_ops = [op for op in ops if op.get_type_name() in ("TopK", "Gather", "GatherElements", "Divide")]
    assert decode_ops
    for op in decode_ops:
        assert all(v.get_node().get_type_name() != "FakeQuantize" for v in op.input_values()), op
    _check_int8_close(runtime, trained)


def test_onnxruntime_spinning_is_set_on_the_session_and_changes_no_result(exports):
    path = exports["random"]["onnxruntime"]
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    reference = load_runtime(path, num_threads=1).run(x)
    for spinning, entry in ((False, "0"), (True, "1")):
        runtime = load_runtime(path, num_threads=1, spinning=spinning)
        options = runtime.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
        landmarks, scores = runtime.run(x)
        assert torch.equal(landmarks, reference[0]) and torch.equal(scores, reference[1])
    # None leaves the session to ONNX Runtime's default: no entry is written
    options = load_runtime(path, num_threads=1).session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        options.get_session_config_entry("session.intra_op.allow_spinning")


# -- runtime errors --------------------------------------------------------------------------------------
def test_runtime_rejects_bad_input_and_bad_requests(exports, tmp_path):
    runtime = load_runtime(exports["random"]["torchscript"])
    with pytest.raises(ValueError, match=r"crops must have shape \(B, 3, 64, 64\), got \(1, 3, 32, 32\)"):
        runtime(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="quantize=int8"):
        load_runtime(exports["random"]["onnxruntime"], precision="int8")
    with pytest.raises(ValueError, match="not available for backend 'torchscript'"):
        load_runtime(exports["random"]["torchscript"], precision="bf16")
    with pytest.raises(ValueError, match="cannot tell the backend"):
        load_runtime(tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_runtime(tmp_path / "missing.onnx")


# -- calibration crops -----------------------------------------------------------------------------------
def test_calibration_crops_from_a_folder(tmp_path):
    _, _, images = render(5, seed=3, size=80)
    for i, image in enumerate(images):
        cv2.imwrite(str(tmp_path / f"face_{i}.png"), image)
    (tmp_path / "notes.txt").write_text("not an image")
    crops = calibration_crops(tmp_path, SIZE, n=3, seed=0)
    assert crops.shape == (3, 3, SIZE, SIZE) and crops.dtype == torch.float32
    transform = build_eval_transform(SIZE)
    every = [transform(im, np.zeros((0, 2)))[0] for im in images]  # the PNGs are lossless
    matches = [[i for i, ref in enumerate(every) if torch.equal(crop, ref)] for crop in crops]
    assert all(len(m) == 1 for m in matches) and len({m[0] for m in matches}) == 3
    assert torch.equal(calibration_crops(tmp_path, SIZE, n=3, seed=0), crops)  # seeded
    assert len(calibration_crops(tmp_path, SIZE, n=50)) == 5
    with pytest.raises(ValueError, match="at least one crop"):
        calibration_crops(tmp_path, SIZE, n=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        calibration_crops(empty, SIZE)
    with pytest.raises(ValueError, match="neither a folder of crops nor a data config.*synthetic"):
        calibration_crops("no_such_dataset", SIZE)


def test_calibration_crops_from_a_data_config_are_training_crops(tmp_path):
    overrides = [
        f"data.root={tmp_path}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.sources.synthetic.n_train=4",
        "data.sources.synthetic.n_common=1",
        "data.sources.synthetic.n_challenge=1",
        "data.sources.synthetic.n_wild=1",
        "data.sources.synthetic.image_size=96",
        "data.num_workers=0",
        "data.prepare_workers=1",
    ]
    crops = calibration_crops("synthetic", SIZE, n=3, data_overrides=overrides)
    assert crops.shape == (3, 3, SIZE, SIZE)
    cached = sorted((tmp_path / "cache" / "synthetic" / f"train_{SIZE}px").rglob("*.png"))
    assert len(cached) == 4
    transform = build_eval_transform(SIZE)
    every = [transform(cv2.imread(str(p)), np.zeros((0, 2)))[0] for p in cached]
    assert all(any(torch.equal(crop, ref) for ref in every) for crop in crops)


# -- the command ---------------------------------------------------------------------------------------
def save_checkpoint(graph: LandmarkGraph, path: Path) -> Path:
    """A training-style checkpoint (hyper_parameters + state_dict with the mean face) of `graph`."""
    import lightning

    from pipnet_lit.lit_module import PIPNetModule

    net = graph.net
    module = PIPNetModule(
        backbone="resnet18",
        num_landmarks=68,
        num_nb=net.num_nb,
        net_stride=net.net_stride,
        input_size=net.input_size,
        pretrained=False,
    )
    module.net.load_state_dict(net.state_dict())
    module.set_meanface(graph.meanface.double())
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, path)
    return path


def test_parse_args_and_argument_errors(tmp_path):
    kwargs = parse_args(["ckpt=a.ckpt", "format=openvino", "quantize=int8", "calibrate=synthetic", "n=7"])
    assert kwargs == {
        "ckpt": "a.ckpt",
        "format": "openvino",
        "out": None,
        "quantize": "int8",
        "calibrate": "synthetic",
        "n": 7,
        "seed": 0,
        "opset": 18,
        "data_overrides": [],
    }
    assert parse_args(["ckpt=a", "data.root=/data", "+data.x=1"])["data_overrides"] == [
        "data.root=/data",
        "+data.x=1",
    ]
    with pytest.raises(UsageError, match="unknown option 'bogus'"):
        parse_args(["ckpt=a", "bogus=1"])
    with pytest.raises(UsageError, match="missing required argument: ckpt=TEXT"):
        parse_args(["format=onnx"])
    with pytest.raises(UsageError, match="bad value for format: 'tflite'"):
        parse_args(["ckpt=a", "format=tflite"])
    with pytest.raises(SystemExit) as stop:
        main(["format=onnx"])
    assert stop.value.code == 2
    with pytest.raises(ValueError, match="format=onnx.*or format=openvino"):
        export("a.ckpt", format="torchscript", quantize="int8", calibrate="x")
    with pytest.raises(ValueError, match="needs calibration crops"):
        export("a.ckpt", format="onnx", quantize="int8")
    with pytest.raises(ValueError, match="choose one of onnx, torchscript, openvino"):
        export("a.ckpt", format="tflite")
    assert default_out("runs/last.ckpt", "openvino", "int8") == Path("runs/last_int8.xml")
    assert default_out("runs/last.ckpt", "torchscript", None) == Path("runs/last.pt")


def test_command_exports_a_checkpoint_to_torchscript(trained, tmp_path):
    ckpt = save_checkpoint(trained["graph"], tmp_path / "model.ckpt")
    out = main([f"ckpt={ckpt}", "format=torchscript", f"out={tmp_path / 'exported' / 'm.pt'}"])
    assert out == tmp_path / "exported" / "m.pt" and out.is_file()
    x = trained["crops"][:2]
    with torch.no_grad():
        ref = trained["graph"](x)[0]
    assert torch.allclose(load_runtime(out)(x), ref, atol=TOL, rtol=0)
    assert torch.allclose(load_runtime(ckpt)(x), ref, atol=TOL, rtol=0)  # eager from the checkpoint


@pytest.mark.slow
def test_command_quantizes_onnx_calibrated_from_a_folder(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    ckpt = save_checkpoint(trained["graph"], tmp_path / "model.ckpt")
    crops = tmp_path / "crops"
    crops.mkdir()
    for i, image in enumerate(trained["images"][:12]):
        cv2.imwrite(str(crops / f"{i}.png"), image)
    out = main([f"ckpt={ckpt}", "format=onnx", "quantize=int8", f"calibrate={crops}", "n=12"])
    assert out == tmp_path / "model_int8.onnx" and out.is_file()
    runtime = load_runtime(out)
    assert runtime.precision == "int8" and runtime.metadata["input_size"] == SIZE
    _check_int8_close(runtime, trained)


# -- the benchmark -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_inference_quick_writes_ratios_and_accuracy(trained, tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    monkeypatch.syspath_prepend(str(REPO / "experiments" / "bench"))
    if "bench_inference" in sys.modules:
        del sys.modules["bench_inference"]
    import bench_inference

    ckpt = save_checkpoint(trained["graph"], tmp_path / "model.ckpt")
    data = [
        f"data.root={tmp_path}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.sources.synthetic.n_train=4",
        "data.sources.synthetic.n_common=2",
        "data.sources.synthetic.n_challenge=2",
        "data.sources.synthetic.n_wild=1",
        "data.sources.synthetic.image_size=96",
        "data.num_workers=0",
        "data.prepare_workers=1",
    ]
    out = tmp_path / "inference.json"
    # round-robin here (one process: fast); the default times each path in a process of its own
    args = ["--quick", "--size", "64", "--batches", "1", "2", "--threads", "1", "--ckpt", str(ckpt)]
    args += ["--isolation", "round-robin"]
    args += [f"--data-override={d}" for d in data] + ["--out", str(out)]
    report = bench_inference.main(args)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["speed"]["isolation"] == "round-robin"
    # one path timed alone in a fresh process, as the default isolation does for every path
    alone = bench_inference.time_in_own_process(
        str(ckpt), bench_inference.BASELINE, argparse.Namespace(batches=[1, 2], size=64, warmup=1, rounds=2)
    )
    assert set(alone) == {"1", "2"} and all(0 < t < 60 for t in alone.values())
    assert report["machine"]["cpu"] and report["machine"]["threads"] == 1
    expected = {"torchscript fp32", "onnxruntime fp32", "onnxruntime int8", "openvino fp32", "openvino int8"}
    for batch in ("batch_1", "batch_2"):
        row = report["speed"][batch]
        assert expected <= set(row)
        base = row["eager fp32 baseline (no_grad)"]["ms"]
        for name, entry in row.items():
            assert entry["speedup"] == pytest.approx(base / entry["ms"]), name
    accuracy = report["accuracy"]
    assert accuracy["subsets"] == {"synthetic_full": 4, "synthetic_common": 2, "synthetic_challenge": 2}
    assert accuracy["model"] == {
        "backbone": "resnet18",
        "net_stride": 16,
        "input_size": 64,
        "num_landmarks": 68,
    }
    for name in expected:
        entry = accuracy["paths"][name]
        for subset, value in entry["nme"].items():
            ref = accuracy["paths"]["eager fp32 baseline (no_grad)"]["nme"][subset]
            assert entry["rel_change"][subset] == pytest.approx((value - ref) / ref)
        if name.endswith("fp32"):
            assert max(entry["max_abs_diff"].values()) <= TOL, name
    targets = report["targets"]
    assert set(targets) == {"batch_1", "batch_2", "nme"}
    assert targets["batch_1"]["int8_target"] == 4.0 and targets["batch_2"]["int8_target"] == 5.0
