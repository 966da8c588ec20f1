"""PIPNetModule wiring: mean face handling, pixel predictions, optimizer, and a tiny model that learns."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from pipnet_lit.datasets.pts import read_pts
from pipnet_lit.datasets.readers.w300 import crop_300w, list_pts_folder
from pipnet_lit.datasets.records import BadInput, load_image_bgr
from pipnet_lit.datasets.transforms import build_eval_transform
from pipnet_lit.lit_module import NonFiniteLossError, PIPNetModule
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


# -- numerical faults ------------------------------------------------------------------------------------


def _batches_with_nan_images(bad: int = 2, batches: int = 4, size: int = 64) -> torch.utils.data.DataLoader:
    """``batches`` batches of two random faces; the images of batch ``bad`` are NaN."""
    rng = torch.Generator().manual_seed(0)
    samples = []
    for i in range(2 * batches):
        image = torch.randn(3, size, size, generator=rng)
        samples.append(
            {
                "image": torch.full_like(image, float("nan")) if i // 2 == bad else image,
                "landmarks": torch.rand(68, 2, generator=rng) * 0.8 + 0.1,
            }
        )
    return torch.utils.data.DataLoader(samples, batch_size=2, shuffle=False)


class _StateAround(L.Callback):
    """The module's full state (parameters and buffers) before and after each training batch."""

    def __init__(self) -> None:
        self.before: dict[int, dict[str, torch.Tensor]] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    @staticmethod
    def _state(module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.net.state_dict().items()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.before[batch_idx] = self._state(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after[batch_idx] = self._state(module)


def _fit(module: PIPNetModule, callbacks=()) -> L.Trainer:
    torch.manual_seed(0)
    module.set_meanface(np.random.default_rng(0).uniform(0.1, 0.9, (68, 2)))
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=_batches_with_nan_images())
    return trainer


def test_nonfinite_loss_stops_training_naming_epoch_batch_and_step() -> None:
    module = small_module(lr=1e-3)
    message = (
        r"the training loss is nan at epoch 0, batch 2 of the epoch \(global step 2\); its parts: cls=nan"
    )
    with pytest.raises(NonFiniteLossError, match=message) as info:
        _fit(module)
    assert isinstance(info.value, FloatingPointError) and "model.nonfinite_loss=skip" in str(info.value)


def test_nonfinite_loss_skip_takes_no_step_and_counts_the_batch() -> None:
    module = small_module(lr=1e-3, nonfinite_loss="skip")
    states = _StateAround()
    warning = r"skipped a training batch with a non-finite loss \(nan\) at epoch 0, batch 2 of the epoch"
    with pytest.warns(RuntimeWarning, match=warning + r" \(global step 2\)"):
        trainer = _fit(module, [states])
    assert module.skipped_nonfinite == 1
    assert trainer.callback_metrics["train/skipped_nonfinite"] == 1
    # the skipped batch changed nothing: weights, and the batch-norm statistics its forward pass touched
    for key, value in states.before[2].items():
        assert torch.equal(states.after[2][key], value), key
    assert all(torch.isfinite(v).all() for v in states.after[3].values() if v.is_floating_point())
    # ... while the batches around it trained
    for batch in (1, 3):
        changed = [k for k, v in states.before[batch].items() if not torch.equal(states.after[batch][k], v)]
        assert "cls_layer.weight" in changed and "bn1.running_mean" in changed, batch
    assert len(states.after) == 4  # the epoch went on after the skipped batch


def test_nonfinite_loss_under_ddp_stops_every_rank_and_refuses_skip() -> None:
    """Under DDP every rank must take the same step: "skip" is refused, and "stop" raises on every rank (the
    strategy's reduce tells a rank whose own loss is finite that another's is not)."""
    from types import SimpleNamespace

    module = small_module(nonfinite_loss="skip")
    module.set_meanface(np.random.default_rng(0).uniform(0.1, 0.9, (68, 2)))
    module.log = module.log_dict = lambda *args, **kwargs: None
    other_rank_bad = SimpleNamespace(reduce=lambda flag, reduce_op: flag + 1 if reduce_op == "sum" else None)
    module._trainer = SimpleNamespace(world_size=2, global_rank=1, current_epoch=3, global_step=17,
                                      strategy=other_rank_bad)  # fmt: skip
    batch = next(iter(_batches_with_nan_images(bad=-1)))
    with pytest.raises(ValueError, match="nonfinite_loss=skip works on one process only"):
        module.training_step(batch, 5)
    module.hparams.nonfinite_loss = "stop"
    message = r"loss of another DDP rank is NaN or inf at epoch 3, batch 5 of the epoch \(global step 17\)"
    with pytest.raises(NonFiniteLossError, match=message):
        module.training_step(batch, 5)
    module._trainer.strategy = SimpleNamespace(reduce=lambda flag, reduce_op: flag)  # every rank finite
    assert torch.isfinite(module.training_step(batch, 5))
    module._trainer = None
    with pytest.raises(ValueError, match=r"nonfinite_loss must be one of \('stop', 'skip'\)"):
        small_module(nonfinite_loss="ignore")
