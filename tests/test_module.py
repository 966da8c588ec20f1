"""PIPNetModule wiring: mean face handling, pixel predictions, optimizer, and a tiny model that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipnet_lit.datasets.pts import read_pts
from pipnet_lit.datasets.readers.w300 import crop_300w, list_pts_folder
from pipnet_lit.datasets.records import BadInput, load_image_bgr
from pipnet_lit.datasets.transforms import build_eval_transform
from pipnet_lit.lit_module import PIPNetModule
from pipnet_lit.metrics import nme
from pipnet_lit.pip import compute_meanface
from pipnet_lit.synthetic import generate_dataset


def small_module(**kwargs) -> PIPNetModule:
    args = dict(backbone="resnet18", net_stride=16, input_size=64, pretrained=False, num_nb=10)
    args.update(kwargs)
    return PIPNetModule(**args)


def test_neighbors_need_a_meanface_first():
    module = small_module()
    with pytest.raises(RuntimeError, match="no mean face yet"):
        _ = module.neighbors
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        module.set_meanface(np.zeros((5, 2)))


def test_meanface_survives_a_state_dict_round_trip():
    module = small_module()
    meanface = np.random.default_rng(0).uniform(0.1, 0.9, (68, 2))
    module.set_meanface(meanface)
    clone = small_module()
    clone.load_state_dict(module.state_dict())
    assert torch.equal(clone.neighbors.indices, module.neighbors.indices)
    np.testing.assert_allclose(clone.meanface.numpy(), meanface)


def test_meanface_stays_float64_under_low_precision_and_pickles():
    import pickle

    module = small_module()
    meanface = np.random.default_rng(1).uniform(0.1, 0.9, (68, 2))
    module.set_meanface(meanface)
    indices = module.neighbors.indices.clone()
    module = module.to(torch.bfloat16)
    assert module.meanface.dtype == torch.float64
    np.testing.assert_array_equal(module.meanface.numpy(), meanface)
    assert torch.equal(module.neighbors.indices, indices)
    clone = pickle.loads(pickle.dumps(module))  # ddp_spawn pickles the module
    assert torch.equal(clone.neighbors.indices, indices)


def test_weight_decay_follows_the_official_rule():
    scratch = small_module().configure_optimizers()["optimizer"]
    assert scratch.param_groups[0]["weight_decay"] == pytest.approx(5e-4)
    explicit = small_module(weight_decay=0.0).configure_optimizers()
    assert explicit["optimizer"].param_groups[0]["weight_decay"] == 0.0
    assert explicit["lr_scheduler"]["scheduler"].milestones == {30: 1, 50: 1}


def test_predict_step_maps_crop_coordinates_to_source_pixels(monkeypatch):
    module = small_module()
    crop = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.25, 0.5]]])
    box = torch.tensor([[10.0, 20.0, 40.0, 80.0]])
    monkeypatch.setattr(module, "predict_landmarks", lambda images: crop)
    out = module.predict_step({"image": torch.zeros(1, 3, 64, 64), "box": box, "index": torch.tensor([0])}, 0)
    expected = torch.tensor([[[10.0, 20.0], [50.0, 100.0], [20.0, 60.0]]])
    torch.testing.assert_close(out["landmarks"], expected)


def test_predict_step_on_real_crops_returns_the_truncated_pts_coordinates(tmp_path, monkeypatch):
    """Ground truth fed through predict_step gives back the .pts values as the official crop used them."""
    from pipnet_lit.datasets.datamodule import LandmarkDataModule

    root = tmp_path / "data"
    generate_dataset(
        root / "synthetic", n_train=2, n_common=2, n_challenge=2, n_wild=0, image_size=96, seed=5
    )
    dm = LandmarkDataModule(
        meta="synthetic", root=str(root), cache_dir=str(tmp_path / "cache"), input_size=64, num_workers=0,
        eval_batch_size=4, load_unlabeled=False,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("predict")
    module = small_module()
    full = dm.eval_sets["synthetic_full"]
    assert len(full) == 4 and {n.split("_")[0] for n in full.names} == {"common", "challenge"}
    batch = torch.utils.data.default_collate([full[i] for i in range(len(full))])
    monkeypatch.setattr(module, "predict_landmarks", lambda images: batch["landmarks"].double())
    out = module.predict_step(batch, 0)
    for index, pixels in zip(out["index"].tolist(), out["landmarks"], strict=True):
        folder, stem = full.names[index].split("_", 1)  # official crop name: <folder>_<image stem>
        expected = np.trunc(read_pts(root / "synthetic" / folder / f"{stem}.pts"))
        np.testing.assert_allclose(pixels.numpy(), expected, atol=1e-3)


@pytest.fixture(scope="module")
def few_faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    generate_dataset(root, n_train=4, n_common=0, n_challenge=0, n_wild=0, image_size=128, seed=3)
    transform = build_eval_transform(128)
    images, landmarks = [], []
    for image_path, pts_path in list_pts_folder(root, "trainset", BadInput("raise")):
        crop, lms, _ = crop_300w(load_image_bgr(image_path), read_pts(pts_path), 128)
        tensor, lms = transform(crop, lms)
        images.append(tensor)
        landmarks.append(torch.as_tensor(lms))
    return torch.stack(images), torch.stack(landmarks).float()


@pytest.mark.slow
def test_tiny_model_overfits_a_few_synthetic_faces(few_faces):
    images, landmarks = few_faces
    torch.manual_seed(0)
    module = small_module(input_size=128, lr=1e-3)
    module.set_meanface(compute_meanface(landmarks.numpy()))
    module.log = module.log_dict = lambda *a, **k: None
    optimizer = module.configure_optimizers()["optimizer"]
    batch = {"image": images, "landmarks": landmarks}

    def current_nme() -> float:
        module.eval()
        with torch.no_grad():
            value = (
                nme(module.predict_landmarks(images), landmarks, norm_indices=((36,), (45,))).mean().item()
            )
        module.train()
        return value

    start = current_nme()
    for _ in range(60):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = current_nme()
    print(f"NME before {start:.4f}, after {end:.4f}")
    assert start > 0.2  # an untrained head predicts far from the faces
    assert end < 0.35 * start, (start, end)
