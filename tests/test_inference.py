"""Tests for pipnet_lit.inference (Predictor) and pipnet_lit.convert (official weights -> our checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from hydra_job import compose_job
from pipnet_lit.convert import describe_official_weights, read_official_meanface
from pipnet_lit.datasets.geometry import CropBox, box_from_points_300w, crop_and_resize, normalize_points
from pipnet_lit.datasets.transforms import build_eval_transform
from pipnet_lit.inference import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageReadError,
    ImageTooLargeError,
    Predictor,
    crop_faces,
    load_image,
    preprocess,
    uncrop,
)
from pipnet_lit.models import PIPNet
from pipnet_lit.pip import PIPOutputs, build_neighbors, encode_targets
from pipnet_lit.synthetic.faces import render_face, sample_face_params, template_68

L, NB = 68, 10


def _meanface() -> np.ndarray:
    t = template_68()
    return (t - t.min(0)) / (t.max(0) - t.min(0)) * 0.8 + 0.1


def _face(seed: int = 0, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    return render_face(sample_face_params(np.random.default_rng(seed), "clean", size))


# -- preprocessing, crop, uncrop ----------------------------------------------------------------------


def test_preprocess_matches_eval_transform_and_formula() -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    got = preprocess(crops)
    assert got.shape == (2, 3, 32, 32) and got.dtype == torch.float32 and got.is_contiguous()
    rgb = crops[..., ::-1].astype(np.float64) / 255.0
    manual = ((rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got.numpy(), manual, atol=1e-5)
    tf = build_eval_transform(32)  # the datamodule's evaluation preprocessing
    expected = torch.stack([tf(c, np.zeros((1, 2)))[0] for c in crops])
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(preprocess(crops[0]), got[:1])  # one (S, S, 3) crop
    with pytest.raises(ValueError, match="uint8"):
        preprocess(crops.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(B, S, S, 3\)"):
        preprocess(crops[..., :2])


def test_crop_faces_clamps_truncates_and_uncrop_inverts() -> None:
    image = np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3)
    crops, boxes = crop_faces(image, [[10.7, 5.2, 50.9, 45.4], [-5, -3, 100, 70]], 16)
    # int() of the float box; the second is clamped to the image [0, W] x [0, H] (exclusive right / bottom)
    np.testing.assert_array_equal(boxes, [[10, 5, 50, 45], [0, 0, 80, 60]])
    assert crops.shape == (2, 16, 16, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], cv2.resize(image[5:45, 10:50], (16, 16)))
    norm = np.array([[[0.0, 0.0], [1.0, 1.0], [0.25, 0.5]]] * 2)
    pixels = uncrop(norm, boxes)
    np.testing.assert_allclose(pixels[0], [[10, 5], [50, 45], [20, 25]])
    np.testing.assert_allclose(pixels[1], [[0, 0], [80, 60], [20, 30]])
    np.testing.assert_array_equal(crops[1], cv2.resize(image, (16, 16)))  # the whole image
    torch_pixels = uncrop(torch.from_numpy(norm), torch.from_numpy(boxes))
    np.testing.assert_allclose(torch_pixels.numpy(), pixels)
    with pytest.raises(ValueError, match="box 0"):
        crop_faces(image, [[100, 100, 120, 120]], 16)  # outside the image: empty after clamping
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        crop_faces(image, [[1, 2, 3]], 16)


def test_load_image_forms(tmp_path: Path) -> None:
    bgr, _ = _face(1, 64)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), bgr)
    np.testing.assert_array_equal(load_image(path), bgr)
    np.testing.assert_array_equal(load_image(str(path)), bgr)
    rgb = bgr[..., ::-1].copy()
    np.testing.assert_array_equal(load_image(Image.fromarray(rgb)), bgr)
    np.testing.assert_array_equal(load_image(rgb, color="rgb"), bgr)
    np.testing.assert_array_equal(load_image(bgr), bgr)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(load_image(gray), np.repeat(gray[..., None], 3, axis=2))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match=r"cannot read image .*broken\.jpg"):
        load_image(bad)
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="uint8"):
        load_image(bgr.astype(np.float32))


def test_load_image_refuses_images_over_max_pixels_before_decoding(tmp_path: Path, monkeypatch) -> None:
    from test_predict import _png_header

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(12000, 12000))  # 144 MP (432 MB decoded), over the default 100 MP
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(40000, 40000))  # over PIL's bomb limit and OpenCV's 2**30 pixels too
    decoded = []
    imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *args: decoded.append(args) or imdecode(*args))
    header = r"bomb\.png \(12000x12000\) has 144,000,000 pixels, more than max_pixels=100,000,000 \(read from"
    with pytest.raises(ImageTooLargeError, match=header):
        load_image(bomb)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png has 1,600,000,000 pixels, more than max_pixels"):
        load_image(huge)
    assert not decoded  # refused from the header alone
    # no limit of ours: OpenCV's applies, with our message naming the file, the size and both limits
    opencv = (
        r"huge\.png \(1,600,000,000 pixels\): more pixels than OpenCV decodes, OPENCV_IO_MAX_IMAGE_PIXELS="
    )
    with pytest.raises(ImageTooLargeError, match=opencv + r".*max_pixels=0"):
        load_image(huge, max_pixels=0)
    assert issubclass(ImageTooLargeError, ImageReadError)  # skipped / reported like an unreadable image

    # the limit applies to every form: file, PIL image, array; 0 and None lift it
    bgr, _ = _face(1, 64)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), bgr)
    for form in (path, Image.fromarray(bgr[..., ::-1].copy()), bgr):
        with pytest.raises(ImageTooLargeError, match=r"64x64.* has 4,096 pixels, more than max_pixels=4,095"):
            load_image(form, max_pixels=4095)
        for limit in (4096, 0, None):
            np.testing.assert_array_equal(load_image(form, max_pixels=limit), bgr)
    with pytest.raises(ValueError, match="max_pixels must be >= 0"):
        load_image(bgr, max_pixels=-1)


# -- round trip through the predictor ----------------------------------------------------------------


class _TargetNet(nn.Module):
    """Returns the PIP targets of fixed crop landmarks (decoding them gives those landmarks back) and
    records every input it sees."""

    def __init__(self, crop_landmarks: np.ndarray, meanface: np.ndarray, grid: int) -> None:
        super().__init__()
        self.landmarks = torch.as_tensor(crop_landmarks, dtype=torch.float32)
        self.neighbors = build_neighbors(meanface, NB)
        self.grid = grid
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> PIPOutputs:
        self.seen.append(x.detach().clone())
        lms = self.landmarks[: x.shape[0]].to(x.device)
        t = encode_targets(lms, self.neighbors.to(x.device), (self.grid, self.grid))
        return PIPOutputs(t.score, t.offset_x, t.offset_y, t.nb_x, t.nb_y)


def test_predictor_round_trip_on_a_synthetic_face_to_1e4_px() -> None:
    image, points = _face(0, 128)
    size = 64
    box_a = box_from_points_300w(points, 128, 128, scale=1.1)  # the 300W training crop
    box_b = CropBox(3.6, 7.9, 120.2, 122.5)  # a float box: truncated to (3, 7, 120, 122)
    frame_b = CropBox(3, 7, 120, 122)
    norm = np.stack([normalize_points(points, box_a), normalize_points(points, frame_b)])
    assert norm.min() > 0 and norm.max() < 1  # the landmarks are inside both crops
    meanface = _meanface()
    net = _TargetNet(norm, meanface, grid=size // 32)
    predictor = Predictor.from_network(net, meanface, num_nb=NB, input_size=size)
    boxes = [[box_a.x0, box_a.y0, box_a.x1, box_a.y1], [box_b.x0, box_b.y0, box_b.x1, box_b.y1]]
    faces = predictor(image, boxes)
    assert len(faces) == 2 and faces.landmarks.shape == (2, L, 2) and faces.scores.shape == (2, L)
    # crop -> network -> uncrop gives back the rendered pixel landmarks
    np.testing.assert_allclose(faces.landmarks[0], points, atol=1e-4, rtol=0)
    np.testing.assert_allclose(faces.landmarks[1], points, atol=1e-4, rtol=0)
    np.testing.assert_allclose(faces.crop_landmarks, norm, atol=2e-6)
    np.testing.assert_array_equal(faces.boxes, [[box_a.x0, box_a.y0, box_a.x1, box_a.y1], [3, 7, 120, 122]])
    np.testing.assert_allclose(faces.scores, 1.0)  # the one-hot score maps peak at 1
    # what the network saw is the official crop of each box, ImageNet-normalized
    expected = preprocess(np.stack([crop_and_resize(image, b, size) for b in (box_a, frame_b)]))
    assert torch.equal(net.seen[-1], expected)


def test_predictor_input_forms_and_batching(tmp_path: Path) -> None:
    image, points = _face(2, 96)
    box = box_from_points_300w(points, 96, 96)
    norm = np.repeat(normalize_points(points, box)[None], 5, axis=0)
    net = _TargetNet(norm, _meanface(), grid=2)
    predictor = Predictor.from_network(net, _meanface(), num_nb=NB, input_size=64, batch_size=2)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), image)
    boxes = [[box.x0, box.y0, box.x1, box.y1]] * 5
    results = [
        predictor(path, boxes),
        predictor(Image.fromarray(image[..., ::-1].copy()), boxes),
        predictor(image[..., ::-1].copy(), boxes, color="rgb"),
        predictor(image, boxes),
    ]
    seen = net.seen
    assert [t.shape[0] for t in seen] == [2, 2, 1] * 4  # five faces in batches of two
    for k in range(1, 4):
        np.testing.assert_array_equal(results[k].landmarks, results[0].landmarks)
        for a, b in zip(seen[3 * k : 3 * k + 3], seen[:3], strict=True):
            assert torch.equal(a, b)
    with pytest.raises(ImageTooLargeError, match="max_pixels=100"):
        predictor(path, boxes, max_pixels=100)
    empty = predictor(image, np.zeros((0, 4)))
    assert empty.landmarks.shape == (0, L, 2) and empty.scores.shape == (0, L)
    with pytest.raises(ValueError, match="64x64"):
        predictor.crops(np.zeros((1, 32, 32, 3), dtype=np.uint8))


# -- official weights ---------------------------------------------------------------------------------


class _OfficialPipResnet18(nn.Module):
    """The official Pip_resnet18 (lib/networks.py) restated: torchvision's resnet18 layers under the same
    attribute names, `layer5` + `bn5` for stride 64, and the five 1x1 head convs."""

    def __init__(self, num_lms: int, num_nb: int, stride: int) -> None:
        super().__init__()
        tv = torchvision.models.resnet18()
        self.conv1, self.bn1, self.maxpool = tv.conv1, tv.bn1, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self.stride = stride
        if stride == 64:
            self.layer5, self.bn5 = nn.Conv2d(512, 512, 3, 2, 1), nn.BatchNorm2d(512)
        self.cls_layer = nn.Conv2d(512, num_lms, 1)
        self.x_layer = nn.Conv2d(512, num_lms, 1)
        self.y_layer = nn.Conv2d(512, num_lms, 1)
        self.nb_x_layer = nn.Conv2d(512, num_nb * num_lms, 1)
        self.nb_y_layer = nn.Conv2d(512, num_nb * num_lms, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.stride == 64:
            x = F.relu(self.bn5(self.layer5(x)))
        heads = (self.cls_layer, self.x_layer, self.y_layer, self.nb_x_layer, self.nb_y_layer)
        return tuple(layer(x) for layer in heads)


def _official_net(stride: int = 32, num_lms: int = L, num_nb: int = NB, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = _OfficialPipResnet18(num_lms, num_nb, stride)
    with torch.no_grad():  # trained-looking statistics, so that every layer matters
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.normal_(0, 0.1)
    return net.eval()


def _official_decode(outputs: tuple[torch.Tensor, ...], meanface: np.ndarray, num_nb: int) -> np.ndarray:
    """The official forward_pip + merge (lib/functions.py, lib/test.py) for one image, in numpy."""
    cls, ox, oy, nbx, nby = (t[0].double().numpy() for t in outputs)
    num_lms, h, w = cls.shape
    cell = cls.reshape(num_lms, -1).argmax(1)
    col, row = cell % w, cell // w
    own_x = (col + ox.reshape(num_lms, -1)[np.arange(num_lms), cell]) / w
    own_y = (row + oy.reshape(num_lms, -1)[np.arange(num_lms), cell]) / h
    nbx = nbx.reshape(num_lms, num_nb, -1)
    nby = nby.reshape(num_lms, num_nb, -1)
    vote_x = (col[:, None] + nbx[np.arange(num_lms), :, cell]) / w  # (L, num_nb)
    vote_y = (row[:, None] + nby[np.arange(num_lms), :, cell]) / h
    dists = ((meanface[:, None, :] - meanface[None, :, :]) ** 2).sum(2)
    neighbours = np.argsort(dists, axis=1)[:, 1 : num_nb + 1]
    lists = [
        [(i, j) for i in range(num_lms) for j in range(num_nb) if neighbours[i, j] == t]
        for t in range(num_lms)
    ]
    max_len = max(len(v) for v in lists)
    merged = np.zeros((num_lms, 2))
    for t, votes in enumerate(lists):
        padded = (votes + votes * 10)[:max_len]
        merged[t, 0] = np.mean([own_x[t]] + [vote_x[i, j] for i, j in padded])
        merged[t, 1] = np.mean([own_y[t]] + [vote_y[i, j] for i, j in padded])
    return merged


def _write_meanface(path: Path, meanface: np.ndarray) -> Path:
    path.write_text(" ".join(f"{v:.6f}" for v in meanface.reshape(-1)) + "\n")
    return path


@pytest.mark.parametrize("stride", [32, 64])
def test_from_official_equals_our_module_and_the_official_decode(stride: int, tmp_path: Path) -> None:
    from pipnet_lit.lit_module import PIPNetModule

    size = 128
    official = _official_net(stride)
    weights = tmp_path / "epoch59.pth"
    torch.save(official.state_dict(), weights)
    meanface_file = _write_meanface(tmp_path / "meanface.txt", _meanface())
    meanface = read_official_meanface(meanface_file)
    np.testing.assert_allclose(meanface, _meanface(), atol=1e-6)
    predictor = Predictor.from_official(weights, meanface_file, "resnet18", L, NB, stride, size)
    assert not predictor.net.training

    crops = np.stack(
        [crop_and_resize(img, CropBox(0, 0, 128, 128), size) for img in (_face(3)[0], _face(4)[0])]
    )
    got = predictor.crops(crops)
    assert got.landmarks.shape == (2, L, 2) and got.scores.shape == (2, L)

    module = PIPNetModule(num_landmarks=L, num_nb=NB, net_stride=stride, input_size=size, pretrained=False)
    module.net.load_state_dict(official.state_dict(), strict=True)
    module.set_meanface(meanface)
    module.eval()
    images = preprocess(crops)
    with torch.no_grad():
        ours = module.predict_landmarks(images)
        raw = official(images)
    torch.testing.assert_close(got.landmarks, ours.float(), atol=1e-6, rtol=0)
    for b in range(2):
        reference = _official_decode(tuple(t[b : b + 1] for t in raw), meanface, NB)
        np.testing.assert_allclose(got.landmarks[b].numpy(), reference, atol=1e-5)
        max_score = raw[0][b].reshape(L, -1).max(1).values
        torch.testing.assert_close(got.scores[b], max_score, atol=1e-6, rtol=0)
    # nn.DataParallel's "module." prefixes load too
    prefixed = {f"module.{k}": v for k, v in official.state_dict().items()}
    again = Predictor.from_official(prefixed, meanface, "resnet18", L, NB, stride, size)
    torch.testing.assert_close(again.crops(crops).landmarks, got.landmarks)


def test_describe_official_weights_reads_the_settings() -> None:
    assert describe_official_weights(_official_net(64, num_lms=5, num_nb=3).state_dict()) == {
        "backbone": "resnet18",
        "num_landmarks": 5,
        "num_nb": 3,
        "net_stride": 64,
    }
    r50 = PIPNet("resnet50", num_landmarks=19, num_nb=10, net_stride=128).state_dict()
    assert describe_official_weights(r50) == {
        "backbone": "resnet50",
        "num_landmarks": 19,
        "num_nb": 10,
        "net_stride": 128,
    }
    mbv2 = PIPNet("mobilenet_v2", num_landmarks=29, num_nb=5, net_stride=32).state_dict()
    assert describe_official_weights(mbv2)["backbone"] == "mobilenet_v2"


@pytest.fixture(scope="module")
def official_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("official")
    weights = root / "epoch59.pth"
    torch.save(_official_net(32).state_dict(), weights)
    return weights, _write_meanface(root / "meanface.txt", _meanface())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "resnet50"}, "backbone='resnet50' but the weights are backbone='resnet18'"),
        ({"num_landmarks": 98}, "num_landmarks=98 but the weights are num_landmarks=68"),
        ({"num_nb": 5}, "num_nb=5 but the weights are num_nb=10"),
        ({"net_stride": 64}, "net_stride=64 but the weights are net_stride=32"),
    ],
)
def test_from_official_names_what_differs(official_files, kwargs: dict, message: str) -> None:
    weights, meanface = official_files
    settings = {"backbone": "resnet18", "num_landmarks": L, "num_nb": NB, "net_stride": 32, "input_size": 64}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as info:
        Predictor.from_official(weights, meanface, **{**settings, **kwargs})
    assert str(weights) in str(info.value)


def test_from_official_bad_files(official_files, tmp_path: Path) -> None:
    weights, meanface = official_files
    settings = {"backbone": "resnet18", "num_landmarks": L, "num_nb": NB, "net_stride": 32, "input_size": 64}
    short = _write_meanface(tmp_path / "short.txt", _meanface()[:60])
    with pytest.raises(ValueError, match="short.txt has 60 points but num_landmarks=68"):
        Predictor.from_official(weights, short, **settings)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read official weights .*junk.pth"):
        Predictor.from_official(junk, meanface, **settings)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        Predictor.from_official(tmp_path / "missing.pth", meanface, **settings)
    # official weights given as a checkpoint: the error says what to use instead
    with pytest.raises(ValueError, match="from_official"):
        Predictor.from_checkpoint(weights)


class _Pickled:
    """A class ``torch.load(weights_only=True)`` refuses to build (it could run code)."""


def test_official_weights_that_are_not_what_they_claim(official_files, tmp_path: Path) -> None:
    weights, meanface = official_files
    settings = {"backbone": "resnet18", "num_landmarks": L, "num_nb": NB, "net_stride": 32, "input_size": 64}
    state = torch.load(weights, weights_only=True)
    data = weights.read_bytes()

    def saved(name: str, obj: object) -> Path:
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    def written(name: str, content: bytes) -> Path:
        (tmp_path / name).write_bytes(content)
        return tmp_path / name

    damaged = bytearray(data)
    damaged[len(data) // 2 : len(data) // 2 + 1000] = bytes(1000)  # zeros in the middle of the weights
    ours = Predictor.from_official(weights, meanface, **settings).save(tmp_path / "ours.ckpt")
    cases = [
        (ours, r"is a pipnet-lit checkpoint, not official weights: load it with .*from_checkpoint"),
        (saved("list.pth", [1, 2, 3]), r"not a state dict of tensors .*it holds a list"),
        (saved("empty.pth", {}), r"it holds an empty dict"),
        (saved("plain.pth", {"epoch": 3, "note": "x"}), r"not tensors: 'epoch' \(int\), 'note' \(str\)"),
        (
            saved("lightning.pth", {"state_dict": state, "epoch": 1}),
            r"is a training checkpoint .*not the official",
        ),
        (saved("linear.pth", nn.Linear(2, 2).state_dict()), r"a state dict, but not of a PIPNet"),
        (saved("object.pth", {"net": _Pickled()}), r"holds a Python object \(.*_Pickled\) that torch\.load"),
        (
            saved("ints.pth", {**state, "cls_layer.weight": state["cls_layer.weight"].long()}),
            r"dtype \(file vs model\): \['cls_layer\.weight: torch\.int64 vs torch\.float32'\]",
        ),
        (
            saved("nan.pth", {**state, "x_layer.bias": torch.full_like(state["x_layer.bias"], float("nan"))}),
            r"NaN or inf values .*\['x_layer\.bias'\]",
        ),
        (written("cut.pth", data[: len(data) // 2]), r"cut\.pth: the file is cut short"),
        (written("damaged.pth", bytes(damaged)), r"damaged\.pth: .*damaged"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            Predictor.from_official(path, meanface, **settings)
        assert str(path) in str(info.value)


# -- our checkpoints ------------------------------------------------------------------------------------


def _lightning_checkpoint(path: Path, num_landmarks: int = L, size: int = 64) -> tuple[Path, object]:
    """A checkpoint written by Lightning itself, as training writes them."""
    import lightning as L_

    from pipnet_lit.lit_module import PIPNetModule

    torch.manual_seed(1)
    module = PIPNetModule(num_landmarks=num_landmarks, num_nb=NB, input_size=size, pretrained=False)
    module.set_meanface(np.random.default_rng(0).random((num_landmarks, 2)))
    trainer = L_.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path, module.eval()


def test_from_checkpoint_equals_the_lightning_module(tmp_path: Path) -> None:
    path, module = _lightning_checkpoint(tmp_path / "last.ckpt")
    predictor = Predictor.from_checkpoint(path)
    assert predictor.input_size == 64 and predictor.num_landmarks == L and not predictor.net.training
    crops = np.stack([crop_and_resize(_face(s)[0], CropBox(0, 0, 128, 128), 64) for s in (5, 6, 7)])
    got = predictor.crops(crops)
    with torch.no_grad():
        expected = module.predict_landmarks(preprocess(crops))
    torch.testing.assert_close(got.landmarks, expected.float(), atol=1e-6, rtol=0)
    assert torch.equal(predictor.meanface, module.meanface)

    # save() writes a checkpoint that loads back to the same predictions, and into the LightningModule
    saved = predictor.save(tmp_path / "copy.ckpt", dataset="300w", note="test")
    again = Predictor.from_checkpoint(saved)
    torch.testing.assert_close(again.crops(crops).landmarks, got.landmarks, atol=0, rtol=0)
    from pipnet_lit.jobs import load_trained_model

    loaded = load_trained_model(saved).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_landmarks(preprocess(crops)).float(), got.landmarks)
    info = torch.load(saved, weights_only=True)["pipnet_lit"]
    assert info["dataset"] == "300w" and info["note"] == "test"


def test_from_checkpoint_errors(tmp_path: Path) -> None:
    path, _ = _lightning_checkpoint(tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=r"predicts 68 landmarks, but 98 are expected"):
        Predictor.from_checkpoint(path, num_landmarks=98)
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"]["_extra_state"] = {"meanface": None}
    torch.save(ckpt, tmp_path / "nomean.ckpt")
    with pytest.raises(ValueError, match="no mean face"):
        Predictor.from_checkpoint(tmp_path / "nomean.ckpt")
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        Predictor.from_checkpoint(tmp_path / "nothing.ckpt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a pipnet-lit checkpoint"):
        Predictor.from_checkpoint(tmp_path / "other.ckpt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_predictor_on_gpu_matches_cpu(tmp_path: Path) -> None:
    path, _ = _lightning_checkpoint(tmp_path / "last.ckpt")
    cpu = Predictor.from_checkpoint(path)
    gpu = Predictor.from_checkpoint(path, device="cuda")
    assert gpu.device.type == "cuda"
    image, points = _face(8, 128)
    box = box_from_points_300w(points, 128, 128)
    boxes = [[box.x0, box.y0, box.x1, box.y1]]
    a, b = cpu(image, boxes), gpu(image, boxes)
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
    crops = preprocess(crop_and_resize(image, box, 64)).cuda()
    assert gpu.crops(crops).landmarks.device.type == "cpu"


# -- convert + eval --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_convert_then_eval_on_300w_like_ours(official_files, tmp_path: Path, capsys) -> None:
    from pipnet_lit.convert import main as convert_main
    from pipnet_lit.eval import evaluate
    from pipnet_lit.synthetic.raw import write_300w_tree

    weights, meanface = official_files
    out = tmp_path / "converted.ckpt"
    args = [f"official={weights}", f"meanface={meanface}", "data=300w", f"out={out}", "input_size=64"]
    assert convert_main(args) == 0
    assert "wrote" in capsys.readouterr().out
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["hyper_parameters"]["backbone"] == "resnet18" and ckpt["pipnet_lit"]["dataset"] == "300w"
    assert ckpt["pipnet_lit"]["converted_from"] == "epoch59.pth"

    root = tmp_path / "data"
    write_300w_tree(root, n_per_folder=1, image_size=96, seed=3)
    cfg = compose_job(
        "eval",
        [f"ckpt_path={out}", "data=300w", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
         "data.num_workers=0", "trainer.accelerator=cpu", "data.eval_batch_size=4"],
        tmp_path,
        output_dir=tmp_path / "outputs" / "eval",
    )  # fmt: skip
    results, objects = evaluate(cfg)
    written = json.loads((tmp_path / "outputs" / "eval" / "test_metrics.json").read_text())
    assert set(written) == {"300w_full", "300w_common", "300w_challenge"}
    # the same NME from the Predictor on the evaluation crops, computed independently
    dataset = objects["datamodule"].eval_sets["300w_full"]
    crops = np.stack([cv2.imread(str(p)) for p in dataset.image_paths])
    pred = Predictor.from_checkpoint(out).crops(crops).landmarks.double().numpy()
    truth = dataset.landmarks.astype(np.float64)
    norm = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=1)
    nme = (np.linalg.norm(pred - truth, axis=2).mean(1) / norm).mean()
    assert written["300w_full"]["nme_io"] == pytest.approx(nme, rel=1e-4)
    assert results["300w_full"]["nme_io"] == pytest.approx(nme, rel=1e-4)


def test_convert_refuses_a_dataset_with_another_landmark_count(
    official_files, tmp_path: Path, capsys
) -> None:
    from pipnet_lit.convert import main as convert_main

    weights, meanface = official_files
    code = convert_main(
        [f"official={weights}", f"meanface={meanface}", "data=wflw", f"out={tmp_path / 'x.ckpt'}"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "predicts 68 landmarks but data=wflw" in err and "98" in err
    assert not (tmp_path / "x.ckpt").exists()
    assert convert_main(["official=a.pth"]) == 2
    assert "missing required arguments: meanface=TEXT, data=TEXT, out=TEXT" in capsys.readouterr().err
