"""Tests for pipnet_lit.models: shapes, official parameter names, init, strides, pretrained weights."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from pipnet_lit.models import IMAGENET_MEAN, IMAGENET_STD, PIPNet, imagenet_weights_path
from pipnet_lit.pip.types import PIPOutputs

# (backbone, strides) as built by the official lib/networks.py (MobileNets ignore net_stride there: 32).
VALID = {
    "resnet18": (16, 32, 64, 128),
    "resnet50": (32, 64, 128),
    "resnet101": (32, 64, 128),
    "mobilenet_v2": (32,),
    "mobilenet_v3": (32,),
}
TRUNK_CHANNELS = {
    "resnet18": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "mobilenet_v2": 1280,
    "mobilenet_v3": 960,
}
# torchvision IMAGENET1K_V1 files, i.e. what `pretrained=True` loaded in the torchvision of the official code.
WEIGHT_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
    "mobilenet_v3": "mobilenet_v3_large-8738ca79.pth",
}
TORCHVISION = {
    "resnet18": models.resnet18,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
    "mobilenet_v2": models.mobilenet_v2,
    "mobilenet_v3": models.mobilenet_v3_large,
}
HEAD = ("cls_layer", "x_layer", "y_layer", "nb_x_layer", "nb_y_layer")
L, NB = 5, 3


def _expected_state_shapes(backbone: str, stride: int, num_lms: int, num_nb: int) -> dict[str, tuple]:
    """Key -> shape of the official Pip_* state_dict: torchvision keys plus the layers the spec lists."""
    tv = TORCHVISION[backbone]().state_dict()
    prefixes = (
        ("features.",)
        if backbone.startswith("mobilenet")
        else ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
    )
    shapes = {k: tuple(v.shape) for k, v in tv.items() if k.startswith(prefixes)}
    c = TRUNK_CHANNELS[backbone]

    def bn(name: str, ch: int) -> None:
        shapes.update({f"{name}.{p}": (ch,) for p in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{name}.num_batches_tracked"] = ()

    head_in = c
    if stride in (64, 128):
        shapes.update({"layer5.weight": (512, c, 3, 3), "layer5.bias": (512,)})
        bn("bn5", 512)
        head_in = 512
    if stride == 128:
        shapes.update({"layer6.weight": (512, 512, 3, 3), "layer6.bias": (512,)})
        bn("bn6", 512)
    if stride == 16:
        shapes["deconv1.weight"] = (c, 512, 4, 4)  # ConvTranspose2d weight: (in, out, k, k); no bias
        bn("bn_deconv1", 512)
        head_in = 512
    for name, out in zip(HEAD, (num_lms,) * 3 + (num_lms * num_nb,) * 2, strict=True):
        shapes[f"{name}.weight"] = (out, head_in, 1, 1)
        shapes[f"{name}.bias"] = (out,)
    return shapes


class _OfficialLikePIP(nn.Module):
    """Straight re-statement of the official Pip_resnet*/Pip_mbnetv2 from the spec, for cross-checks."""

    def __init__(self, backbone: str, stride: int, num_lms: int, num_nb: int) -> None:
        super().__init__()
        tv = TORCHVISION[backbone]()
        c = TRUNK_CHANNELS[backbone]
        self.is_resnet = backbone.startswith("resnet")
        self.stride = stride
        if self.is_resnet:
            self.conv1, self.bn1, self.maxpool = tv.conv1, tv.bn1, tv.maxpool
            self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        else:
            self.features = tv.features
        self.sigmoid = nn.Sigmoid()  # official attribute, unused, no parameters
        if stride in (64, 128):
            self.layer5, self.bn5 = nn.Conv2d(c, 512, 3, 2, 1), nn.BatchNorm2d(512)
        if stride == 128:
            self.layer6, self.bn6 = nn.Conv2d(512, 512, 3, 2, 1), nn.BatchNorm2d(512)
        if stride == 16:
            self.deconv1 = nn.ConvTranspose2d(c, 512, 4, 2, 1, bias=False)
            self.bn_deconv1 = nn.BatchNorm2d(512)
        self.cls_layer = nn.Conv2d(c, num_lms, 1)
        self.x_layer = nn.Conv2d(c, num_lms, 1)
        self.y_layer = nn.Conv2d(c, num_lms, 1)
        self.nb_x_layer = nn.Conv2d(c, num_lms * num_nb, 1)
        self.nb_y_layer = nn.Conv2d(c, num_lms * num_nb, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.is_resnet:
            x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        else:
            x = self.features(x)
        if self.stride in (64, 128):
            x = F.relu(self.bn5(self.layer5(x)))
        if self.stride == 128:
            x = F.relu(self.bn6(self.layer6(x)))
        if self.stride == 16:
            x = F.relu(self.bn_deconv1(self.deconv1(x)))
        return tuple(
            layer(x)
            for layer in (self.cls_layer, self.x_layer, self.y_layer, self.nb_x_layer, self.nb_y_layer)
        )


@pytest.mark.parametrize(("backbone", "stride"), [(b, s) for b, strides in VALID.items() for s in strides])
def test_output_shapes_and_grid(backbone: str, stride: int) -> None:
    torch.manual_seed(0)
    net = PIPNet(backbone, num_landmarks=L, num_nb=NB, net_stride=stride, input_size=128).eval()
    assert (net.num_landmarks, net.num_nb, net.net_stride) == (L, NB, stride)
    h, w = 128 // stride, 256 // stride
    assert net.grid_size() == (h, h)
    assert net.grid_size((128, 256)) == (h, w)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 128, 256))
    assert isinstance(out, PIPOutputs)
    assert [tuple(t.shape) for t in out[:5]] == [(2, L, h, w)] * 3 + [(2, L * NB, h, w)] * 2
    assert all(torch.isfinite(t).all() for t in out[:5])
    assert out.score_coarse == ()  # supervised network: no coarse score maps


@pytest.mark.parametrize(("backbone", "stride"), [(b, s) for b, strides in VALID.items() for s in strides])
def test_state_dict_keys_and_shapes_match_official(backbone: str, stride: int) -> None:
    net = PIPNet(backbone, num_landmarks=7, num_nb=4, net_stride=stride)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == _expected_state_shapes(backbone, stride, 7, 4)


@pytest.mark.parametrize(
    ("backbone", "stride"),
    [
        ("resnet18", 16),
        ("resnet18", 32),
        ("resnet18", 64),
        ("resnet18", 128),
        ("resnet50", 32),
        ("resnet101", 32),
        ("mobilenet_v2", 32),
    ],
)
def test_official_state_dict_loads_strict_and_gives_same_outputs(backbone: str, stride: int) -> None:
    torch.manual_seed(1)
    official = _OfficialLikePIP(backbone, stride, L, NB).eval()
    with torch.no_grad():  # non-trivial weights and BN statistics everywhere
        for t in official.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) * 0.2 + 0.9 if t.ndim == 1 else torch.randn_like(t) * 0.05)
    net = PIPNet(backbone, num_landmarks=L, num_nb=NB, net_stride=stride).eval()
    result = net.load_state_dict(official.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    official.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref, got = official(x), net(x)
    for a, b in zip(ref, got[:5], strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert got.score_coarse == ()


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_resnet50_101_coarse_strides_feed_512_channels_to_head(backbone: str) -> None:
    # The official Pip_resnet50/101 declare the head on 2048 channels even after layer5 (2048 -> 512), so
    # their stride 64/128 forward fails; we give the head the 512 channels it actually receives.
    net = PIPNet(backbone, num_landmarks=L, num_nb=NB, net_stride=64)
    assert net.layer5.in_channels == 2048 and net.cls_layer.in_channels == 512 == net.feature_channels


def test_head_and_added_layers_init_like_official() -> None:
    torch.manual_seed(0)
    net = PIPNet("resnet18", num_landmarks=68, num_nb=10, net_stride=128)
    for name in (*HEAD, "layer5", "layer6"):
        layer = getattr(net, name)
        assert abs(layer.weight.std().item() - 0.001) < 5e-5, name
        assert abs(layer.weight.mean().item()) < 5e-5, name
        assert torch.count_nonzero(layer.bias) == 0, name
    for name in ("bn5", "bn6"):
        assert torch.all(getattr(net, name).weight == 1) and torch.all(getattr(net, name).bias == 0)
    deconv = PIPNet("resnet18", net_stride=16).deconv1
    assert deconv.bias is None and abs(deconv.weight.std().item() - 0.001) < 5e-5
    # Trunk keeps torchvision's init (kaiming normal, fan_out): conv1 std = sqrt(2 / (64 * 7 * 7)).
    assert abs(net.conv1.weight.std().item() - (2 / (64 * 49)) ** 0.5) < 2e-3
    mb = PIPNet("mobilenet_v3", num_landmarks=98, num_nb=10)
    assert (
        abs(mb.nb_y_layer.weight.std().item() - 0.001) < 5e-5 and torch.count_nonzero(mb.cls_layer.bias) == 0
    )


def test_features_and_head_compose_to_forward() -> None:
    net = PIPNet("resnet18", num_landmarks=L, num_nb=NB, net_stride=64, input_size=128).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        feats = net.forward_features(x)
        assert feats.shape == (2, 512, 2, 2)
        assert (feats >= 0).all()  # ReLU after bn5
        for a, b in zip(net.forward_head(feats), net(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"backbone": "resnet34"}, "Unknown backbone 'resnet34'"),
        ({"backbone": "mobilenet_v2", "net_stride": 16}, "net_stride=16 is not supported for backbone"),
        ({"backbone": "mobilenet_v3", "net_stride": 64}, "supported: [32]"),
        ({"backbone": "resnet50", "net_stride": 16}, "supported: [32, 64, 128]"),
        ({"backbone": "resnet18", "net_stride": 8}, "supported: [16, 32, 64, 128]"),
        ({"input_size": 100}, "input_size=100 must be a positive multiple of net_stride=32"),
        ({"num_nb": 0}, "num_landmarks and num_nb must be >= 1"),
    ],
)
def test_bad_config_raises_clear_error(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        PIPNet(**kwargs)
    assert fragment in str(info.value)
    if "backbone" in fragment or "supported" in fragment:  # lists every valid pair
        assert "resnet18: [16, 32, 64, 128]" in str(info.value)
        assert "mobilenet_v3: [32]" in str(info.value)


def test_bad_input_raises() -> None:
    net = PIPNet("mobilenet_v2", num_landmarks=L, num_nb=NB)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got \(1, 1, 64, 64\)"):
        net(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="not a positive multiple of net_stride=32"):
        net.grid_size(80)


class _OfficialLikeGSSL(_OfficialLikePIP):
    """Straight re-statement of the official GSSL Pip_resnet18 forward (lib/networks_gssl.py): the head on
    the 8x8 features, then `cls_layer` on the features max-pooled 2x2 once and twice."""

    def __init__(self, num_lms: int, num_nb: int) -> None:
        super().__init__("resnet18", 32, num_lms, num_nb)
        self.my_maxpool = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)  # no parameters

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        cls1, ox, oy = self.cls_layer(x), self.x_layer(x), self.y_layer(x)
        nbx, nby = self.nb_x_layer(x), self.nb_y_layer(x)
        x = self.my_maxpool(x)
        cls2 = self.cls_layer(x)
        cls3 = self.cls_layer(self.my_maxpool(x))
        return cls1, cls2, cls3, ox, oy, nbx, nby


def _perturbed_(net: nn.Module) -> nn.Module:
    """Non-trivial weights and BN statistics everywhere (in place), eval mode."""
    torch.manual_seed(5)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) * 0.2 + 0.9 if t.ndim == 1 else torch.randn_like(t) * 0.05)
    return net.eval()


def test_coarse_scores_apply_cls_layer_to_pooled_features() -> None:
    net = _perturbed_(PIPNet("resnet18", num_landmarks=L, num_nb=NB, input_size=256, coarse_levels=2))
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        out = net(x)
        feats = net.forward_features(x)
        once = F.max_pool2d(feats, 2)
        by_hand = (net.cls_layer(once), net.cls_layer(F.max_pool2d(once, 2)))
        pooled_scores = F.max_pool2d(out.score, 2)
    assert [tuple(m.shape) for m in out.score_coarse] == [(2, L, 4, 4), (2, L, 2, 2)]
    for got, exp in zip(out.score_coarse, by_hand, strict=True):
        torch.testing.assert_close(got, exp, rtol=0, atol=0)
    assert not torch.allclose(out.score_coarse[0], pooled_scores, atol=1e-4)  # features pooled, not scores
    # the full-grid outputs are the supervised network's
    sup = PIPNet("resnet18", num_landmarks=L, num_nb=NB, input_size=256).eval()
    sup.load_state_dict(net.state_dict(), strict=True)
    with torch.no_grad():
        ref = sup(x)
    assert ref.score_coarse == ()
    for a, b in zip(ref[:5], out[:5], strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_coarse_model_matches_official_gssl_forward() -> None:
    official = _perturbed_(_OfficialLikeGSSL(L, NB))
    net = PIPNet("resnet18", num_landmarks=L, num_nb=NB, coarse_levels=2).eval()
    net.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        cls1, cls2, cls3, ox, oy, nbx, nby = official(x)
        out = net(x)
    for got, exp in zip((*out[:5], *out.score_coarse), (cls1, ox, oy, nbx, nby, cls2, cls3), strict=True):
        torch.testing.assert_close(got, exp, rtol=0, atol=0)


def test_supervised_checkpoint_loads_into_coarse_model_and_back() -> None:
    sup = _perturbed_(PIPNet("resnet18", num_landmarks=L, num_nb=NB, input_size=128))
    coarse = PIPNet("resnet18", num_landmarks=L, num_nb=NB, input_size=128, coarse_levels=2)
    assert {k: v.shape for k, v in coarse.state_dict().items()} == {
        k: v.shape for k, v in sup.state_dict().items()
    }
    result = coarse.load_state_dict(sup.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    back = PIPNet("resnet18", num_landmarks=L, num_nb=NB, input_size=128)
    back.load_state_dict(coarse.state_dict(), strict=True)
    for key, value in sup.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert sum(p.numel() for p in coarse.parameters()) == sum(p.numel() for p in sup.parameters())


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_coarse_model_traces_and_exports() -> None:
    net = _perturbed_(PIPNet("resnet18", num_landmarks=L, num_nb=NB, input_size=128, coarse_levels=2))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        eager = net(x)
        traced = torch.jit.trace(net, x)(x)  # a traced module returns plain (nested) tuples
        exported = torch.export.export(net, (x,)).module()(x)
    assert isinstance(eager, tuple) and isinstance(exported, PIPOutputs)
    for out in (PIPOutputs(*traced), exported):
        for a, b in zip((*eager[:5], *eager.score_coarse), (*out[:5], *out.score_coarse), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"coarse_levels": 3}, "coarse_levels must be one of (0, 1, 2)"),
        ({"coarse_levels": -1}, "coarse_levels must be one of (0, 1, 2)"),
        ({"coarse_levels": True}, "coarse_levels must be one of (0, 1, 2)"),
        ({"coarse_levels": 2, "input_size": 192}, "6x6 grid (input_size=192 / net_stride=32) 2x2 2 time(s)"),
        ({"coarse_levels": 1, "input_size": 96}, "the grid must be divisible by 2"),
    ],
)
def test_bad_coarse_levels_raise(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        PIPNet("resnet18", num_landmarks=L, num_nb=NB, **kwargs)
    assert fragment in str(info.value)


def test_coarse_levels_one_and_indivisible_input() -> None:
    net = PIPNet("resnet18", num_landmarks=L, num_nb=NB, input_size=64, coarse_levels=1).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
        assert [tuple(m.shape) for m in out.score_coarse] == [(1, L, 1, 1)]
        with pytest.raises(ValueError, match=r"divisible by 2, got \(3, 3\).*multiple of 64"):
            net(torch.randn(1, 3, 96, 96))
    assert "coarse_levels=1" in repr(net)


def test_imagenet_normalization_constants() -> None:
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)
    tf = models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    assert tuple(tf.mean) == IMAGENET_MEAN and tuple(tf.std) == IMAGENET_STD


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Empty torch hub cache under tmp_path; downloads fail like they do without internet (and are logged)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls: dict = {"urls": []}

    def no_network(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls["urls"].append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    calls["checkpoints"] = tmp_path / "hub" / "checkpoints"
    return calls


@pytest.mark.parametrize("backbone", list(VALID))
def test_weights_path_is_torchvision_v1_file_in_hub_cache(offline_hub: dict, backbone: str) -> None:
    assert imagenet_weights_path(backbone) == offline_hub["checkpoints"] / WEIGHT_FILES[backbone]


def test_pretrained_missing_offline_raises_runtime_error_naming_file(offline_hub: dict) -> None:
    expected = offline_hub["checkpoints"] / "resnet18-f37072fd.pth"
    with pytest.raises(RuntimeError) as info:
        PIPNet("resnet18", pretrained=True)
    message = str(info.value)
    assert str(expected) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "weights='IMAGENET1K_V1'" in message and "pretrained=False" in message
    assert "URLError" in message
    assert offline_hub["urls"] == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert not expected.exists()


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2", "mobilenet_v3"])
def test_pretrained_loads_from_cache_offline(offline_hub: dict, backbone: str) -> None:
    torch.manual_seed(3)
    fake = {
        k: (torch.randn_like(v) if v.is_floating_point() else v)
        for k, v in TORCHVISION[backbone]().state_dict().items()
    }
    offline_hub["checkpoints"].mkdir(parents=True)
    torch.save(fake, offline_hub["checkpoints"] / WEIGHT_FILES[backbone])

    net = PIPNet(backbone, num_landmarks=L, num_nb=NB, pretrained=True)
    assert offline_hub["urls"] == []  # nothing downloaded
    ours = net.state_dict()
    trunk_keys = [k for k in ours if not k.startswith(HEAD)]
    assert len(trunk_keys) > 50
    for key in trunk_keys:
        torch.testing.assert_close(ours[key], fake[key], rtol=0, atol=0)
    assert abs(net.cls_layer.weight.std().item() - 0.001) < 2e-4  # head not touched by the weights


def test_pretrained_downloads_into_cache(offline_hub: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {
        k: torch.full_like(v, 0.5) if v.is_floating_point() else v
        for k, v in models.resnet18().state_dict().items()
    }
    seen: list = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        seen.append((url, Path(dst), hash_prefix))
        torch.save(fake, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    net = PIPNet("resnet18", pretrained=True)
    path = offline_hub["checkpoints"] / "resnet18-f37072fd.pth"
    assert seen == [("https://download.pytorch.org/models/resnet18-f37072fd.pth", path, "f37072fd")]
    assert torch.all(net.layer3[0].conv1.weight == 0.5)


def test_pretrained_corrupt_cache_file_raises(offline_hub: dict) -> None:
    offline_hub["checkpoints"].mkdir(parents=True)
    bad = offline_hub["checkpoints"] / "mobilenet_v2-b0353104.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(
        RuntimeError, match="Could not read the ImageNet weights file .*mobilenet_v2-b0353104.pth"
    ):
        PIPNet("mobilenet_v2", pretrained=True)
