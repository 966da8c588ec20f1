"""The inference core (`LandmarkGraph`) and the one checkpoint reader (`read_checkpoint`) all use."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from pipnet_lit.checkpoints import read_checkpoint, write_checkpoint
from pipnet_lit.inference import Predictor
from pipnet_lit.jobs import load_trained_model
from pipnet_lit.landmark_graph import LandmarkGraph
from pipnet_lit.lit_module import PIPNetModule
from pipnet_lit.models import NETWORK_SETTINGS, PIPNet
from pipnet_lit.pip import build_neighbors, decode_details
from pipnet_lit.synthetic.faces import template_68

SETTINGS = {"backbone": "resnet18", "num_landmarks": 68, "num_nb": 4, "net_stride": 32, "input_size": 64}


def _meanface() -> np.ndarray:
    t = template_68()
    return (t - t.min(0)) / (t.max(0) - t.min(0)) * 0.8 + 0.1


@pytest.fixture
def module() -> PIPNetModule:
    torch.manual_seed(0)
    module = PIPNetModule(**SETTINGS, pretrained=False, lr=3e-4, merge=False)
    module.set_meanface(_meanface())
    return module.eval()


def _lightning_checkpoint(module: PIPNetModule, path: Path) -> Path:
    """A checkpoint written the way training writes one (Lightning's `save_checkpoint`)."""
    import lightning as L

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def test_network_settings_rebuild_the_same_network() -> None:
    net = PIPNet(**SETTINGS, coarse_levels=1)
    assert net.settings() == {**SETTINGS, "coarse_levels": 1}
    assert tuple(net.settings()) == NETWORK_SETTINGS
    again = PIPNet.from_settings({**net.settings(), "lr": 1.0})  # other keys are ignored
    assert again.settings() == net.settings()
    assert PIPNet.from_settings(SETTINGS).coarse_levels == 0  # not recorded: supervised
    with pytest.raises(ValueError, match=r"lack \['num_nb'\]"):
        PIPNet.from_settings({k: v for k, v in SETTINGS.items() if k != "num_nb"})


def test_graph_decodes_like_the_decode_maths() -> None:
    torch.manual_seed(1)
    net = PIPNet(**SETTINGS).eval()
    graph = LandmarkGraph(net, _meanface()).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        landmarks, scores = graph(x)
        details = decode_details(net(x), build_neighbors(torch.as_tensor(_meanface()), 4))
    assert torch.equal(landmarks, details.merged) and torch.equal(scores, details.max_score)
    own = LandmarkGraph(net, _meanface(), merge=False)
    with torch.no_grad():
        assert torch.equal(own(x)[0], details.own)
    assert graph.settings() == {**SETTINGS, "coarse_levels": 0, "merge": True}
    assert graph.meanface_cpu.dtype == torch.float64 and graph.num_landmarks == 68


def test_graph_refuses_settings_that_contradict_the_network() -> None:
    net = PIPNet(**SETTINGS)
    with pytest.raises(ValueError, match=r"num_nb=10 but the network has 4"):
        LandmarkGraph(net, _meanface(), num_nb=10)
    with pytest.raises(ValueError, match=r"needs \(68, 2\)"):
        LandmarkGraph(net, np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"needs num_nb= and input_size="):
        LandmarkGraph(torch.nn.Identity(), _meanface())


def test_lightning_checkpoint_reads_without_lightning(module: PIPNetModule, tmp_path: Path) -> None:
    path = _lightning_checkpoint(module, tmp_path / "last.ckpt")
    ckpt = read_checkpoint(path)
    assert ckpt.settings == {**SETTINGS, "coarse_levels": 0}
    assert ckpt.hparams["lr"] == 3e-4 and ckpt.merge is False and ckpt.info == {}
    assert torch.equal(ckpt.meanface, torch.as_tensor(_meanface(), dtype=torch.float64))
    graph = ckpt.graph()
    assert graph.merge is False and not graph.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = module.predict_landmarks(x)
        assert torch.equal(graph(x)[0], expected)
        assert torch.equal(ckpt.graph(merge=True)(x)[0], LandmarkGraph(module.net, _meanface())(x)[0])
    # the module's inference core shares its network but is no submodule: the checkpoint holds net + mean face
    assert module.graph.net is module.net
    assert {k for k in module.state_dict() if not k.startswith("net.")} == {"_extra_state"}
    # the LightningModule every job tests with: built from the same reader, equal to Lightning's own load
    loaded = load_trained_model(path)
    reference = PIPNetModule.load_from_checkpoint(path, map_location="cpu", pretrained=False)
    assert dict(loaded.hparams) == dict(reference.hparams)
    ours, theirs = loaded.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        if key != "_extra_state":
            assert torch.equal(ours[key], theirs[key]), key
    assert torch.equal(loaded.meanface, reference.meanface)


def test_write_then_read_round_trip(module: PIPNetModule, tmp_path: Path) -> None:
    graph = LandmarkGraph(module.net, _meanface(), merge=False)
    path = write_checkpoint(
        graph, tmp_path / "sub" / "model.ckpt", dataset="300w", converted_from="epoch59.pth"
    )
    assert path == tmp_path / "sub" / "model.ckpt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.ckpt"]  # no temporary file left
    ckpt = read_checkpoint(path, num_landmarks=68)
    assert ckpt.info == {"format": 1, "dataset": "300w", "converted_from": "epoch59.pth"}
    assert ckpt.hparams["pretrained"] is False and ckpt.merge is False
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ckpt.graph()(x)[0], graph(x)[0])
    # Predictor and the LightningModule read it too
    predictor = Predictor.from_checkpoint(path)
    assert predictor.merge is False and predictor.num_landmarks == 68
    assert torch.equal(load_trained_model(path).meanface, ckpt.meanface)


def test_reader_errors_name_the_file_and_the_fix(module: PIPNetModule, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint .*missing.ckpt does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*junk.ckpt .*is it a PyTorch file"):
        read_checkpoint(junk)
    bare = tmp_path / "epoch59.pth"
    torch.save(module.net.state_dict(), bare)
    with pytest.raises(ValueError, match=r"not a pipnet-lit checkpoint.*bare state dict.*pipnet_lit.convert"):
        read_checkpoint(bare)
    path = _lightning_checkpoint(module, tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=r"predicts 68 landmarks, but 98 are expected"):
        read_checkpoint(path, num_landmarks=98)
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["_extra_state"] = {"meanface": None}
    torch.save(raw, tmp_path / "early.ckpt")
    with pytest.raises(ValueError, match="holds no mean face.*saved before training started"):
        read_checkpoint(tmp_path / "early.ckpt")
    raw = torch.load(path, weights_only=True)
    del raw["hyper_parameters"]["net_stride"]
    torch.save(raw, tmp_path / "nosettings.ckpt")
    with pytest.raises(ValueError, match=r"hyper_parameters lack \['net_stride'\]"):
        read_checkpoint(tmp_path / "nosettings.ckpt")
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["net.x_layer.weight"] = raw["state_dict"]["net.x_layer.weight"][:10]
    torch.save(raw, tmp_path / "shape.ckpt")
    with pytest.raises(ValueError, match=r"does not fit the network: shape \(file vs model\).*x_layer"):
        read_checkpoint(tmp_path / "shape.ckpt").network()


class _Pickled:
    """A class ``torch.load(weights_only=True)`` refuses to build (it could run code)."""


def test_reader_refuses_files_that_are_not_what_they_claim(module: PIPNetModule, tmp_path: Path) -> None:
    good = write_checkpoint(module.graph, tmp_path / "good.ckpt")
    raw = torch.load(good, weights_only=True)
    data = good.read_bytes()

    def saved(name: str, obj: object) -> Path:
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    def changed(name: str, *, hparams: dict | None = None, state: dict | None = None) -> Path:
        return saved(
            name,
            {
                **raw,
                "hyper_parameters": {**raw["hyper_parameters"], **(hparams or {})},
                "state_dict": {**raw["state_dict"], **(state or {})},
            },
        )

    def written(name: str, content: bytes) -> Path:
        (tmp_path / name).write_bytes(content)
        return tmp_path / name

    weight = raw["state_dict"]["net.cls_layer.weight"]
    damaged = bytearray(data)
    damaged[len(data) // 2 : len(data) // 2 + 1000] = bytes(1000)
    cases = [
        # a torch file of something else
        (saved("list.ckpt", [1, 2, 3]), r"not a pipnet-lit checkpoint .*found: list"),
        (saved("tensor.ckpt", torch.zeros(3)), r"not a pipnet-lit checkpoint .*found: Tensor"),
        (
            saved("plain.ckpt", {"a": 1, "b": "x"}),
            r"not a pipnet-lit checkpoint .*found: a dict of \['a', 'b'\]",
        ),
        (
            saved("nodicts.ckpt", {"state_dict": [1], "hyper_parameters": 3}),
            r"its 'hyper_parameters' is not a dict \(int\)",
        ),
        (changed("strings.ckpt", hparams={"num_landmarks": "68"}), r"\['num_landmarks'\] = '68' \(str\)"),
        (changed("backbone.ckpt", hparams={"backbone": 18}), r"\['backbone'\] is not a name \(int\)"),
        (
            changed("notensor.ckpt", state={"net.x_layer.bias": [0.0] * 68}),
            r"not tensors: \['net\.x_layer\.bias",
        ),
        (
            changed("nanmean.ckpt", state={"_extra_state": {"meanface": torch.full((68, 2), float("nan"))}}),
            "NaN",
        ),
        (
            changed("strmean.ckpt", state={"_extra_state": {"meanface": "face"}}),
            r"mean face is not \(68, 2\)",
        ),
        # settings that would build a network the weights cannot fill (refused before it is built)
        (
            changed("hugenb.ckpt", hparams={"num_nb": 10**6}),
            r"nb_x_layer\.weight has shape \(272, 512, 1, 1\), but hyper_parameters \(num_landmarks=68, "
            r"num_nb=1000000\) need 68000000 output channels",
        ),
        # a file cut short, damaged on the way, or holding Python objects
        (written("cut.ckpt", data[: len(data) // 2]), r"the file is cut short"),
        (written("damaged.ckpt", bytes(damaged)), r"damaged"),
        (saved("object.ckpt", {"state_dict": _Pickled()}), r"holds a Python object \(.*_Pickled\)"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            read_checkpoint(path)
        assert str(path) in str(info.value), path.name
    # weights of the wrong kind, NaN weights, settings no network has: refused when the network is built
    bias = raw["state_dict"]["net.x_layer.bias"]
    at_build = [
        (changed("ints.ckpt", state={"net.cls_layer.weight": weight.long()}), r"dtype \(file vs model\)"),
        (
            changed("nan.ckpt", state={"net.x_layer.bias": bias + float("inf")}),
            r"NaN or inf values .*x_layer\.bias",
        ),
        (changed("resnet9.ckpt", hparams={"backbone": "resnet9"}), r"describe no network we build: Unknown"),
    ]
    for path, message in at_build:
        with pytest.raises(ValueError, match=message) as info:
            read_checkpoint(path).network()
        assert str(path) in str(info.value), path.name
    # a float16 copy is no fault: it loads, converted
    half = {
        k: v.half() if k.startswith("net.") and v.is_floating_point() else v
        for k, v in raw["state_dict"].items()
    }
    assert read_checkpoint(changed("half.ckpt", state=half)).network() is not None


def _calls_torch_load(func: ast.expr) -> bool:
    """``torch.load`` / ``torch.serialization.load`` (however the call is spelt after ``import torch``)."""
    names = []
    while isinstance(func, ast.Attribute):
        names.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        names.append(func.id)
    dotted = ".".join(reversed(names))
    return dotted in ("torch.load", "torch.serialization.load")


def test_every_torch_load_in_src_passes_weights_only_true() -> None:
    """A file a user hands in is unpickled only with ``weights_only=True`` (a pickle can run any code); a
    future ``torch.load`` without it fails here, and so does ``from torch import load``, which hides it."""
    src = Path(__file__).parents[1] / "src"
    calls, unsafe = [], []
    for file in sorted(src.rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for node in ast.walk(tree):
            where = f"{file.relative_to(src)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
                unsafe += [
                    f"{where} (from {node.module} import load)" for a in node.names if a.name == "load"
                ]
            if isinstance(node, ast.Call) and _calls_torch_load(node.func):
                calls.append(where)
                flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(where)
    assert calls, "no torch.load call found in src/: the scan is broken"
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
    # the scan finds what a plain text search finds
    text_hits = sum(f.read_text(encoding="utf-8").count("torch.load(") for f in src.rglob("*.py"))
    assert len(calls) <= text_hits
