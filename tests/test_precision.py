"""Mixed precision and channels-last: bf16-mixed training steps on the CPU (losses, targets and decoding in
fp32), and the GPU recipe (`trainer=gpu`) composes into bf16, channels-last and fed loaders."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from hydra_job import compose_job
from pipnet_lit.lit_module import PIPNetModule
from pipnet_lit.pip import PIPOutputs

SETTINGS = {"backbone": "resnet18", "num_landmarks": 68, "num_nb": 4, "net_stride": 32, "input_size": 64}


def _faces(batches: int = 3, size: int = 64) -> torch.utils.data.DataLoader:
    rng = torch.Generator().manual_seed(0)
    samples = [
        {
            "image": torch.randn(3, size, size, generator=rng),
            "landmarks": torch.rand(68, 2, generator=rng) * 0.8 + 0.1,
        }
        for _ in range(2 * batches)
    ]
    return torch.utils.data.DataLoader(samples, batch_size=2, shuffle=False)


class _Seen(L.Callback):
    """What the training steps returned and the dtype of the maps inside them."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.map_dtypes: list[torch.dtype] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        handle = module.net.cls_layer.register_forward_hook(lambda m, i, o: self.map_dtypes.append(o.dtype))
        self._handle = handle

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._handle.remove()
        self.losses.append(outputs["loss"].detach())


def test_bf16_mixed_training_steps_on_the_cpu_with_channels_last() -> None:
    torch.manual_seed(0)
    module = PIPNetModule(**SETTINGS, pretrained=False, channels_last=True)
    module.set_meanface(np.random.default_rng(0).uniform(0.1, 0.9, (68, 2)))
    conv = module.net.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    before = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
    seen = _Seen()
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[seen],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=_faces())
    assert trainer.global_step == 3
    assert seen.map_dtypes == [torch.bfloat16] * 3  # the network ran in bf16 ...
    assert [loss.dtype for loss in seen.losses] == [torch.float32] * 3  # ... the loss in fp32
    assert all(torch.isfinite(loss) for loss in seen.losses)
    after = module.net.state_dict()
    assert after["conv1.weight"].dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(after["cls_layer.weight"], before["cls_layer.weight"])
    assert module.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # decoding under bf16 autocast runs in fp32 and stays close to the fp32 decode
    images = torch.randn(2, 3, 64, 64)
    module.eval()
    with torch.no_grad():
        reference = module.predict_landmarks(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = module.predict_landmarks(images)
    assert low.dtype == torch.float32
    diff = (low - reference).abs().amax(dim=-1)  # crop fractions; a cell is 1/2 of the crop here (64 / 32)
    assert diff.median() < 1e-3  # most landmarks agree to within rounding (this net is barely trained) ...
    assert diff.max() < 0.5 + 1e-2  # ... a near-tie in bf16 score maps can move an argmax by one cell


def test_outputs_float_is_a_no_op_for_fp32_and_casts_bf16() -> None:
    maps = [torch.zeros(1, 2, 4, 4) for _ in range(5)]
    out = PIPOutputs(*maps, (torch.zeros(1, 2, 2, 2),))
    assert out.float() is out
    low = PIPOutputs(*[m.bfloat16() for m in maps], (torch.zeros(1, 2, 2, 2, dtype=torch.bfloat16),))
    cast = low.float()
    assert all(t.dtype == torch.float32 for t in cast[:5]) and cast.score_coarse[0].dtype == torch.float32


def test_gpu_recipe_composes_into_bf16_channels_last_and_fed_loaders(tmp_path) -> None:
    from hydra.utils import instantiate

    cfg = compose_job("train", ["+experiment=300w_r18", "trainer=gpu", "model.pretrained=false"], tmp_path)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.plugins[0]._target_ == "pipnet_lit.checkpoint_io.AtomicCheckpointIO"  # default's rest
    assert cfg.trainer.max_epochs == 60
    assert cfg.data.num_workers == 8 and cfg.data.pin_memory and cfg.data.prefetch_factor == 4
    model = instantiate(cfg.model)
    assert model.hparams.channels_last and model.net.conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    data = instantiate(cfg.data)
    assert data.hparams.pin_memory is True and data.hparams.prefetch_factor == 4
    # the paper rows keep the default trainer: fp32, NCHW
    paper = compose_job("train", ["+experiment=300w_r18"], tmp_path)
    assert paper.trainer.precision == "32-true" and paper.model.channels_last is False
