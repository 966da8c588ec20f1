"""One evaluation pass and its consumers: metrics, per-image CSV, CED plots, grids, W&B, TensorBoard.

W&B runs offline (conftest sets WANDB_MODE=offline); an offline run keeps everything in its ``run-<id>.wandb``
record log, which `wandb_records` reads back (config, summary, exit code) without any network.
"""

from __future__ import annotations

import csv
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from hydra_job import compose_job, job_env
from pipnet_lit.callbacks import (
    CEDPlot,
    ModelCheckpoint,
    PerImageResults,
    PredictionGrid,
    plot_ced,
    plot_prediction_grid,
    to_display,
)
from pipnet_lit.datasets.datamodule import LandmarkDataModule
from pipnet_lit.lit_module import EvalResults, PIPNetModule
from pipnet_lit.metrics.functional import ced_curve, fr_auc, nme
from pipnet_lit.pip import decode_details
from pipnet_lit.run_results import read_per_image_results, results_from_metrics
from pipnet_lit.synthetic import generate_dataset

REPO = Path(__file__).parents[1]
SUBSETS = ["synthetic_full", "synthetic_common", "synthetic_challenge"]


# -- helpers -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """`<data.root>/synthetic`: 6 training faces, 3 + 2 test faces (one test split, three subsets)."""
    root = tmp_path_factory.mktemp("cbdata") / "synthetic"
    generate_dataset(root, n_train=6, n_common=3, n_challenge=2, n_wild=2, image_size=96, seed=1)
    return root


def make_datamodule(synth: Path, cache: Path, eval_batch_size: int = 2) -> LandmarkDataModule:
    return LandmarkDataModule(
        meta="synthetic", root=str(synth.parent), cache_dir=str(cache), input_size=64, batch_size=2,
        eval_batch_size=eval_batch_size, num_workers=0, load_unlabeled=False,
    )  # fmt: skip


def make_module(seed: int = 0) -> PIPNetModule:
    torch.manual_seed(seed)
    return PIPNetModule(net_stride=16, input_size=64, pretrained=False)


def quiet_trainer(**kwargs) -> L.Trainer:
    args = dict(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    args.update(kwargs)
    return L.Trainer(**args)


def tiny_overrides(root: Path, workdir: Path) -> list[str]:
    return [
        "+experiment=synthetic", f"data.root={root.parent}", f"data.cache_dir={workdir / 'cache'}",
        "data.input_size=64", "data.batch_size=2", "data.eval_batch_size=16", "data.num_workers=0",
        "data.sources.synthetic=null", "model.pretrained=false", "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null",
        "trainer.check_val_every_n_epoch=1",  # the demo validates once; these tests watch every epoch
    ]  # fmt: skip


def _log_records(path: Path):
    """The records of a W&B ``.wandb`` file (a LevelDB-style log: 32 KiB blocks, 7-byte record headers)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk
            pending = b""


def _set(tree: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = json.loads(item.value_json)


def wandb_records(run_dir: Path) -> dict:
    """An offline W&B run folder (``offline-run-*``) read back: run id, config, summary, exit code."""
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb

    # wandb.finish() returns before the W&B service has written the last records; stopping the service
    # flushes them (the next wandb.init starts a new one)
    wandb.teardown()

    (log,) = list(run_dir.glob("run-*.wandb"))
    out = {"config": {}, "summary": {}, "exit_code": None, "run_id": None}
    for data in _log_records(log):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run_id"] = record.run.run_id
            for item in record.run.config.update:
                _set(out["config"], item)
        elif kind == "config":
            for item in record.config.update:
                _set(out["config"], item)
        elif kind == "summary":
            for item in record.summary.update:
                _set(out["summary"], item)
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def tensorboard_tags(folder: Path) -> dict[str, list[int]]:
    """Tag -> steps of every summary value in the TensorBoard event files under ``folder``."""
    from tensorboardX.proto import event_pb2

    tags: dict[str, list[int]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):  # TFRecord: u64 length, u32 crc, payload, u32 crc
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


# -- unit: results records, plots ----------------------------------------------------------------------
def test_eval_results_select_keeps_rows_aligned():
    res = EvalResults(
        indices=np.array([0, 2, 5]), names=["a", "b", "c"], landmarks_crop=np.arange(12.0).reshape(3, 2, 2),
        landmarks=np.arange(12.0).reshape(3, 2, 2) * 10, max_score=np.arange(6.0).reshape(3, 2),
        nmes={"nme_io": np.array([0.1, 0.2, 0.3])},
    )  # fmt: skip
    sub = res.select(np.array([True, False, True]))
    assert len(sub) == 2 and sub.names == ["a", "c"] and sub.indices.tolist() == [0, 5]
    np.testing.assert_array_equal(sub.landmarks[1], [[80.0, 90.0], [100.0, 110.0]])
    np.testing.assert_array_equal(sub.max_score[:, 1], [1.0, 5.0])
    assert sub.nmes["nme_io"].tolist() == [0.1, 0.3]


def test_ced_figure_draws_exactly_the_curve():
    nmes = np.array([0.01, 0.02, 0.02, 0.05, 0.2])
    xs, ys = ced_curve(nmes, 0.1, 0.01)
    fig = plot_ced(xs.numpy(), ys.numpy(), "CED", "nme_io", fr=0.2, auc=0.5)
    line = fig.axes[0].lines[0].get_xydata()
    np.testing.assert_allclose(line[:, 0], 100 * np.arange(0, 0.11, 0.01))
    # fraction of NMEs <= x, counted by hand: 0 at x=0, 1/5 at 0.01, 3/5 from 0.02, 4/5 from 0.05, never 1
    expected = [0, 0.2, 0.6, 0.6, 0.6, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    np.testing.assert_allclose(line[:, 1], expected)
    assert "AUC 0.5000, FR 20.00%" in fig.axes[0].get_legend().get_texts()[0].get_text()


def test_prediction_grid_puts_points_on_crop_pixels():
    images = np.zeros((3, 3, 8, 8), dtype=np.float32)  # ImageNet-normalized zeros = the mean colour
    shown = to_display(images)
    assert shown.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(shown[0, 0, 0], [0.485, 0.456, 0.406], atol=1e-6)
    pred = np.array([[[0.25, 0.5], [1.0, 0.0]]] * 3)
    target = np.array([[[0.5, 0.5], [0.0, 1.0]]] * 3)
    fig = plot_prediction_grid(shown, pred, target, ["a", "b", "c"], columns=2)
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "c"
    gt, pr = fig.axes[0].collections  # ground truth first, then predictions, in 8-pixel crop coordinates
    np.testing.assert_allclose(gt.get_offsets(), [[4.0, 4.0], [0.0, 8.0]])
    np.testing.assert_allclose(pr.get_offsets(), [[2.0, 4.0], [8.0, 0.0]])
    assert tuple(np.round(pr.get_facecolor()[0][:3], 3)) == (1.0, 0.231, 0.188)  # red: prediction
    with pytest.raises(ValueError, match="every_n_epochs"):
        PredictionGrid(every_n_epochs=0)


# -- the one pass ----------------------------------------------------------------------------------------
def test_one_pass_feeds_metrics_per_image_csv_and_ced(synth, tmp_path):
    dm = make_datamodule(synth, tmp_path / "cache")
    module = make_module()
    dm.prepare_data()
    dm.setup("fit")
    module.set_meanface(dm.meanface)
    forwards = []
    module.net.register_forward_hook(lambda *args: forwards.append(1))
    per_image, ced = PerImageResults(dirpath=tmp_path / "run"), CEDPlot(dirpath=tmp_path / "run" / "plots")
    trainer = quiet_trainer(callbacks=[per_image, ced])
    trainer.test(module, datamodule=dm, verbose=False)
    assert len(forwards) == 3  # 5 test images in batches of 2: one forward per batch, nothing else

    # Independent pass: every subset on its own, whole-subset batches, through decode_details and nme.
    module.eval()
    rows = read_csv(tmp_path / "run" / "test_per_image.csv")
    assert rows[0] == ["subset", "name", "nme_io", "nme_ip"]
    assert len(rows) - 1 == sum(len(dm.eval_sets[s]) for s in SUBSETS) == 5 + 3 + 2
    table = read_per_image_results(tmp_path / "run" / "test_per_image.csv")
    assert list(table) == SUBSETS
    for subset in SUBSETS:
        data = dm.eval_sets[subset]
        batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
        with torch.no_grad():
            details = decode_details(module.net(batch["image"]), module.neighbors)
        target = batch["landmarks"]
        expected = {
            "nme_io": nme(details.merged, target, norm_indices=([36], [45])).numpy(),
            "nme_ip": nme(
                details.merged, target, "inter_pupil", norm_indices=(range(36, 42), range(42, 48))
            ).numpy(),
        }
        res = module.eval_results["test"][subset]
        assert res.names == data.names == table[subset].names
        for key in ("nme_io", "nme_ip"):
            np.testing.assert_allclose(res.nmes[key], expected[key], rtol=1e-5)
            np.testing.assert_array_equal(table[subset].nmes[key], res.nmes[key])  # written exactly
            # the metrics are the means of the per-image values in the CSV
            assert module.test_results[subset][key] == pytest.approx(
                table[subset].nmes[key].mean(), abs=1e-12
            )
            logged = float(trainer.callback_metrics[f"test/{subset}/{key}"])
            assert logged == pytest.approx(table[subset].nmes[key].mean(), rel=1e-6)
        fr, auc = fr_auc(table[subset].nmes["nme_io"], 0.1, 1e-4)
        assert module.test_results[subset]["fr@0.10"] == fr
        assert module.test_results[subset]["auc@0.10"] == pytest.approx(auc, abs=1e-12)
        np.testing.assert_allclose(res.landmarks_crop, details.merged.numpy(), atol=1e-5)
        np.testing.assert_allclose(res.max_score, details.max_score.numpy(), atol=1e-4)
        # source-image pixels: crop fractions scaled by the crop box (x0, y0, w, h)
        boxes = data.boxes.astype(np.float64)
        pixels = res.landmarks_crop * boxes[:, None, 2:4] + boxes[:, None, 0:2]
        np.testing.assert_allclose(res.landmarks, pixels, atol=1e-3)
        # the CED: a PNG per subset, and the curve drawn is ced_curve of the per-image NMEs in the CSV
        png = tmp_path / "run" / "plots" / f"ced_{subset}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and ced.paths[subset] == png
        xs, ys = ced_curve(table[subset].nmes["nme_io"], 0.1, 1e-4)
        np.testing.assert_array_equal(ced.curves[subset][0], xs.numpy())
        np.testing.assert_array_equal(ced.curves[subset][1], ys.numpy())


# -- W&B, TensorBoard, grids: a real short run ------------------------------------------------------------
@pytest.mark.slow
def test_wandb_tensorboard_run_with_grids_ced_and_per_image_results(synth, tmp_path):
    import wandb

    from pipnet_lit.train import train

    overrides = [
        *tiny_overrides(synth, tmp_path), "logger=[csv,wandb,tensorboard]", "trainer.max_epochs=4",
        "callbacks.prediction_grid.every_n_epochs=2", "callbacks.prediction_grid.num_images=3",
        "trainer.log_every_n_steps=1",
    ]  # fmt: skip
    cfg = compose_job("train", ["run_name=run", *overrides], tmp_path)
    metrics, _ = train(cfg)
    assert wandb.run is None  # the job closed its run
    run_dir = Path(cfg.paths.output_dir)
    plots = run_dir / "plots"

    # grids after epochs 1 and 3 (every 2 epochs, 0-based names), none after 0 and 2
    assert sorted(p.name for p in plots.glob("val_grid_*.png")) == [
        "val_grid_epoch001.png", "val_grid_epoch003.png",
    ]  # fmt: skip
    results = json.loads((run_dir / "test_metrics.json").read_text())
    table = read_per_image_results(run_dir / "test_per_image.csv")
    assert list(table) == SUBSETS and [len(table[s].names) for s in SUBSETS] == [5, 3, 2]
    for subset in SUBSETS:
        for key in ("nme_io", "nme_ip"):
            assert results[subset][key] == pytest.approx(table[subset].nmes[key].mean(), abs=1e-12)
        assert (plots / f"ced_{subset}.png").is_file()

    # the offline W&B run: config = resolved Hydra config + run_dir; summary = NME keys and the CED
    (offline,) = list((run_dir / "wandb").glob("offline-run-*"))
    record = wandb_records(offline)
    assert record["exit_code"] == 0
    assert record["config"]["run_dir"] == str(run_dir.resolve())
    assert record["config"]["model"]["num_nb"] == cfg.model.num_nb
    assert record["config"]["paths"]["output_dir"] == str(run_dir)
    summary = record["summary"]
    for subset in SUBSETS:
        for key in ("nme_io", "nme_ip", "fr@0.10", "auc@0.10"):
            assert summary[f"test/{subset}/{key}"] == pytest.approx(results[subset][key], abs=1e-7), key
        image = summary[f"test/{subset}/ced_image"]
        assert image["_type"] == "image-file" and (offline / "files" / image["path"]).is_file()
        chart = summary[f"test/{subset}/ced_table"]
        data = json.loads((offline / "files" / chart["path"]).read_text())
        xs, ys = ced_curve(table[subset].nmes["nme_io"], 0.1, 1e-4)
        assert data["columns"] == ["nme_io", "fraction"] and len(data["data"]) == len(xs) == 1001
        np.testing.assert_allclose(np.array(data["data"]), np.stack([xs.numpy(), ys.numpy()], 1), atol=1e-12)
    assert summary["val/grid"]["_type"] == "image-file"
    assert summary["val/nme"] == pytest.approx(metrics["val/nme"], abs=1e-7)

    # TensorBoard: the grids at the epochs they were drawn, the CED images, the metrics
    tags = tensorboard_tags(run_dir / "tensorboard")
    assert tags["val/grid"] == [1, 3]
    assert all(f"test/{s}/ced" in tags for s in SUBSETS) and "test/synthetic_full/nme_io" in tags


@pytest.mark.slow
def test_crashed_job_marks_its_wandb_run_failed_and_closes_it(synth, tmp_path, monkeypatch):
    import wandb

    from pipnet_lit.train import train

    def crash(self, batch, batch_idx):
        raise RuntimeError("boom in training_step")

    monkeypatch.setattr(PIPNetModule, "training_step", crash)
    cfg = compose_job("train", ["run_name=crash", *tiny_overrides(synth, tmp_path), "logger=wandb"], tmp_path)
    with pytest.raises(RuntimeError, match="boom in training_step"):
        train(cfg)
    assert wandb.run is None
    (offline,) = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert wandb_records(offline)["exit_code"] == 1


@pytest.mark.slow
def test_multirun_logs_each_job_to_its_own_wandb_run(synth, tmp_path):
    """Hydra's basic launcher runs both jobs in one process: each must finish its own W&B run."""
    sweep = tmp_path / "multi"
    overrides = [o for o in tiny_overrides(synth, tmp_path) if not o.startswith("callbacks.")]
    command = [
        sys.executable, "-m", "pipnet_lit.train", "-m", "model.num_nb=3,4", *overrides, "logger=wandb",
        "trainer.max_epochs=1", "++trainer.limit_train_batches=1", "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null", f"paths.root_dir={tmp_path}", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = job_env(WANDB_DIR=str(tmp_path / "wandb_dir"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "will reuse this run" not in result.stderr + result.stdout
    runs = {}
    for job in ("0", "1"):
        (offline,) = list((sweep / job / "wandb").glob("offline-run-*"))  # one run per job folder
        record = wandb_records(offline)
        runs[record["run_id"]] = record
        assert record["exit_code"] == 0 and record["config"]["run_dir"] == str((sweep / job).resolve())
        assert record["summary"]["test/synthetic_full/nme_io"] > 0
    assert len(runs) == 2
    assert sorted(r["config"]["model"]["num_nb"] for r in runs.values()) == [3, 4]


# -- last.ckpt after every epoch, validated or not --------------------------------------------------------
@pytest.mark.parametrize("check_val_every_n_epoch", [1, 3])
def test_last_checkpoint_is_written_after_every_training_epoch(synth, tmp_path, check_val_every_n_epoch):
    """The demo validates once, at the end: Lightning alone would then write last.ckpt only after that
    validation, and a run killed earlier would have nothing to resume from."""
    seen = []

    class Watch(L.Callback):  # what a kill at the start of each epoch, or after the fit, would leave
        def _look(self, trainer):
            path = tmp_path / "ckpt" / "last.ckpt"
            ckpt = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else {}
            seen.append((trainer.current_epoch, ckpt.get("global_step")))

        def on_train_epoch_start(self, trainer, pl_module):
            self._look(trainer)

        def on_fit_end(self, trainer, pl_module):
            self._look(trainer)

    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="epoch_{epoch:03d}", monitor="val/nme", mode="min", save_top_k=1,
        save_last=True, auto_insert_metric_name=False, enable_version_counter=False,
    )  # fmt: skip
    trainer = quiet_trainer(
        max_epochs=3, limit_train_batches=2, enable_checkpointing=True, callbacks=[checkpoint, Watch()],
        check_val_every_n_epoch=check_val_every_n_epoch,
    )  # fmt: skip
    trainer.fit(make_module(seed=5), datamodule=make_datamodule(synth, tmp_path / "cache"))
    assert seen == [(0, None), (1, 2), (2, 4), (3, 6)]  # the previous epoch's step (2 batches an epoch)
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert len(saved) == 2 and saved[1] == "last.ckpt"  # and the best validated epoch (top 1)
    if check_val_every_n_epoch == 3:
        assert saved[0] == "epoch_002.ckpt"  # the only validated epoch


# -- eval: one network pass, the predictions CSV unchanged ------------------------------------------------
@pytest.mark.slow
def test_eval_runs_the_network_once_and_writes_the_same_predictions_csv(synth, tmp_path, monkeypatch):
    import pipnet_lit.eval as evaluation

    dm = make_datamodule(synth, tmp_path / "cache")
    module = make_module(seed=3)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)

    # The reference: the predictions CSV as eval wrote it before (a second pass with trainer.predict).
    reference = PIPNetModule.load_from_checkpoint(ckpt, map_location="cpu", pretrained=False)
    ref_dm = make_datamodule(synth, tmp_path / "cache")
    predictions = quiet_trainer().predict(reference, datamodule=ref_dm)
    (pool,) = ref_dm.eval_pools
    expected = [["subset", "image"] + [f"{a}{i}" for i in range(68) for a in ("x", "y")]]
    for batch in predictions:
        for idx, pts in zip(batch["index"].tolist(), batch["landmarks"], strict=True):
            for subset, mask in pool.subsets.items():
                if mask[idx]:
                    expected.append(
                        [subset, pool.dataset.names[idx], *(f"{v:.3f}" for v in pts.flatten().tolist())]
                    )

    forwards = []
    load = evaluation.load_trained_model

    def counting_load(path):
        model = load(path)
        model.net.register_forward_hook(lambda *args: forwards.append(1))
        return model

    monkeypatch.setattr(evaluation, "load_trained_model", counting_load)
    preds = tmp_path / "preds.csv"
    overrides = [
        f"ckpt_path={ckpt}", f"data.root={synth.parent}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.num_workers=0", "data.sources.synthetic=null", "data.eval_batch_size=2",
        f"predictions_csv={preds}",
        "trainer.accelerator=cpu",
    ]  # fmt: skip
    overrides.append("callbacks.rich_progress_bar=null")  # eval's own callbacks group: callbacks/eval.yaml
    cfg = compose_job("eval", ["run_name=ev", *overrides], tmp_path)
    results, _ = evaluation.evaluate(cfg)
    assert len(forwards) == math.ceil(5 / 2)  # one forward per test batch: no second pass for the CSV
    assert read_csv(preds) == expected
    # the eval run folder holds the same per-image results and CED plots as a training run
    out = Path(cfg.paths.output_dir)
    table = read_per_image_results(out / "test_per_image.csv")
    for subset in SUBSETS:
        assert results[subset]["nme_io"] == pytest.approx(table[subset].nmes["nme_io"].mean(), abs=1e-12)
        assert (out / "plots" / f"ced_{subset}.png").is_file()


# -- DDP: the files written on rank 0 hold every rank's images ---------------------------------------------
@pytest.mark.slow
def test_ddp_per_image_results_equal_single_process(synth, tmp_path):
    """Two CPU processes (gloo) see each test image exactly once: the per-image rows and the synced
    metrics (NME, FR, AUC) equal one process's."""
    tables, metrics = {}, {}
    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        dm = make_datamodule(synth, tmp_path / "cache", eval_batch_size=1)
        module = make_module(seed=7)
        dm.prepare_data()
        dm.setup("fit")
        module.set_meanface(dm.meanface)
        out = tmp_path / f"devices{devices}"
        trainer = quiet_trainer(
            devices=devices, strategy=strategy, callbacks=[PerImageResults(dirpath=out), CEDPlot(dirpath=out)]
        )
        trainer.test(module, datamodule=dm, verbose=False)
        tables[devices] = read_per_image_results(out / "test_per_image.csv")
        metrics[devices] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        assert (out / "ced_synthetic_full.png").is_file()
    assert metrics[1]["test/synthetic_full/nme_io"] > 0
    for subset in SUBSETS:
        for key in ("nme_io", "fr@0.10", "auc@0.10"):
            name = f"test/{subset}/{key}"
            assert metrics[2][name] == pytest.approx(metrics[1][name], abs=1e-7), name
    for subset in SUBSETS:
        assert tables[2][subset].names == tables[1][subset].names  # every image once, in dataset order
        for key in ("nme_io", "nme_ip"):
            np.testing.assert_allclose(tables[2][subset].nmes[key], tables[1][subset].nmes[key], rtol=1e-6)


def test_results_from_logged_metrics():
    """What train() reports when the test ran in spawned workers (ddp_spawn): the synced logged values."""
    import torch

    logged = {
        "test/300w_full/nme_io": torch.tensor(0.0375),
        "test/300w_full/fr@0.10": torch.tensor(0.01),
        "test/cofw_full/nme_ip": 0.05,
        "test/nme": torch.tensor(0.0375),  # the primary metric: not a subset's
        "val/300w_full/nme_io": 0.04,
        "train/loss": 1.5,
    }
    assert results_from_metrics(logged) == {
        "300w_full": {"nme_io": pytest.approx(0.0375), "fr@0.10": pytest.approx(0.01)},
        "cofw_full": {"nme_ip": 0.05},
    }
    assert results_from_metrics(logged, "val") == {"300w_full": {"nme_io": 0.04}}
