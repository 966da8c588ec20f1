"""`pipnet_lit.evaluation`: scoring against hand-computed numbers, subsets, FR / AUC, the collector, the
plan a data module returns, its prepared sources, and that the module stays free of Lightning and Hydra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipnet_lit.datasets.datamodule import LandmarkDataModule, PreparedSource
from pipnet_lit.evaluation import (
    EvalPlan,
    EvalResults,
    EvaluationData,
    LoaderPlan,
    MetricSpec,
    ResultsCollector,
    collected_results,
    metric_spec,
    per_image_nmes,
    score_batch,
    split_subsets,
    subset_summary,
    to_source_pixels,
)
from pipnet_lit.metrics.functional import fr_auc
from pipnet_lit.synthetic import SyntheticFaces, generate_dataset

F64 = torch.float64
IO = MetricSpec("nme_io", "inter_ocular", ((0,), (1,)))
RAW = MetricSpec("nme_raw", "none")
BOX = MetricSpec("nme_box", "box_long_side")


# -- scoring, by hand ------------------------------------------------------------------------------------
def two_faces() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2 images x 3 landmarks in crop fractions, and their crop boxes [x0, y0, w, h].

    Image 0: eyes (0, 0), (0.4, 0) -> inter-ocular 0.4; every landmark off by (0.03, 0.04): 0.05.
    Image 1: eyes (0, 0), (0, 0.2) -> inter-ocular 0.2; errors 0, 0.1 (x), 0.05 (y): mean 0.05.
    """
    target = torch.tensor([[[0, 0], [0.4, 0], [0.2, 0.3]], [[0, 0], [0, 0.2], [0.1, 0.1]]], dtype=F64)
    pred = target.clone()
    pred[0] += torch.tensor([0.03, 0.04], dtype=F64)
    pred[1, 1, 0] += 0.1
    pred[1, 2, 1] += 0.05
    boxes = torch.tensor([[5, 7, 20, 20], [0, 0, 10, 40]], dtype=F64)
    return pred, target, boxes


def test_per_image_nmes_hand_computed():
    pred, target, boxes = two_faces()
    got = per_image_nmes(pred, target, boxes, [IO, RAW, BOX])
    assert list(got) == ["nme_io", "nme_raw", "nme_box"]
    torch.testing.assert_close(got["nme_io"], torch.tensor([0.05 / 0.4, 0.05 / 0.2], dtype=F64))
    torch.testing.assert_close(got["nme_raw"], torch.tensor([0.05, 0.05], dtype=F64))
    # box norms in pixels of the crop box: image 0 errs (0.6, 0.8) px = 1 px per landmark, box side 20;
    # image 1 errs 0, 1 (0.1 * w 10), 2 (0.05 * h 40) px: mean 1, longer side 40
    torch.testing.assert_close(got["nme_box"], torch.tensor([1 / 20, 1 / 40], dtype=F64))


def test_to_source_pixels():
    crop = torch.tensor([[[0.5, 0.25], [0.0, 1.0]]], dtype=F64)
    boxes = torch.tensor([[10, 20, 100, 40]], dtype=torch.float32)
    got = to_source_pixels(crop, boxes)
    assert got.dtype == F64
    torch.testing.assert_close(got, torch.tensor([[[60.0, 30.0], [10.0, 60.0]]], dtype=F64))


def test_score_batch_scores_only_images_in_a_subset():
    pred, target, boxes = two_faces()
    # the batch holds dataset images 2 and 0 of a 3-image loader; only image 0 is in a subset
    index = torch.tensor([2, 0])
    subsets = {"a": np.array([True, False, False]), "b": np.zeros(3, dtype=bool)}
    scores = score_batch(pred, target, boxes, index, subsets, [IO, RAW])
    assert scores.rows.tolist() == [1]
    torch.testing.assert_close(scores.nmes["nme_io"], torch.tensor([0.25], dtype=F64))
    per_image = scores.per_image()
    assert torch.isnan(per_image["nme_io"][0]) and per_image["nme_io"][1].item() == pytest.approx(0.25)
    assert per_image["nme_raw"].shape == (2,)

    none = score_batch(pred, target, boxes, index, {"b": np.zeros(3, dtype=bool)}, [IO])
    assert none.rows.numel() == 0 and torch.isnan(none.per_image()["nme_io"]).all()


def results(nme_io, nme_ip, indices=None) -> EvalResults:
    n = len(nme_io)
    indices = np.arange(n) if indices is None else np.asarray(indices)
    return EvalResults(
        indices=indices,
        names=[f"img{i}" for i in indices],
        landmarks_crop=np.zeros((n, 3, 2)),
        landmarks=np.zeros((n, 3, 2)),
        max_score=np.zeros((n, 3)),
        nmes={"nme_io": np.asarray(nme_io, dtype=np.float64), "nme_ip": np.asarray(nme_ip, dtype=np.float64)},
    )


def test_split_subsets_keeps_order_and_drops_empty_subsets():
    pooled = results([0.05, 0.2, 0.08, 0.01], [1, 2, 3, 4], indices=[0, 1, 3, 4])  # image 2 never scored
    subsets = {
        "full": np.array([True, True, True, True, True]),
        "odd": np.array([False, True, False, True, False]),
        "only2": np.array([False, False, True, False, False]),
    }
    out = split_subsets(pooled, subsets)
    assert list(out) == ["full", "odd"]  # image 2 alone: not scored, no entry
    assert out["odd"].indices.tolist() == [1, 3] and out["odd"].names == ["img1", "img3"]
    assert out["odd"].nmes["nme_ip"].tolist() == [2, 3]
    assert len(out["full"]) == 4


def test_subset_summary_keys_means_and_fr_auc():
    nmes = [0.05, 0.2, 0.08]
    summary = subset_summary(results(nmes, [0.5, 0.25, 0.75]), ["nme_io", "nme_ip"], 0.1, 1e-4)
    assert list(summary) == ["nme_io", "fr@0.10", "auc@0.10", "nme_ip"]  # FR / AUC of the primary key only
    assert summary["nme_io"] == pytest.approx(0.11, abs=1e-15)
    assert summary["nme_ip"] == pytest.approx(0.5, abs=1e-15)
    assert summary["fr@0.10"] == pytest.approx(1 / 3, abs=1e-12)  # one of three above 0.1
    fr, auc = fr_auc(np.array(nmes), 0.1, 1e-4)
    assert (summary["fr@0.10"], summary["auc@0.10"]) == (fr, auc)
    # hand check of the AUC: the curve is 0 until 0.05, 1/3 until 0.08, 2/3 until 0.1: area / 0.1
    assert auc == pytest.approx((1 / 3 * 0.03 + 2 / 3 * 0.02) / 0.1, abs=2e-3)
    other = subset_summary(results(nmes, nmes), ["nme_ip", "nme_io"], 0.08, 1e-4)
    assert list(other) == ["nme_ip", "fr@0.08", "auc@0.08", "nme_io"]
    assert other["fr@0.08"] == pytest.approx(1 / 3, abs=1e-12)  # 0.08 itself is no failure


def test_metric_spec_from_a_mapping():
    spec = metric_spec({"key": "nme_io", "norm": "inter_ocular", "indices": [[36], [45]]})
    assert spec == MetricSpec("nme_io", "inter_ocular", ((36,), (45,)))
    assert metric_spec(spec) is spec and metric_spec(spec.as_dict()) == spec
    assert metric_spec({"key": "nme_raw", "norm": "none"}).indices is None


# -- the collector -----------------------------------------------------------------------------------------
def batch(index, num_landmarks=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b = len(index)
    crop = torch.rand(b, num_landmarks, 2, generator=gen)
    return {
        "index": torch.tensor(index),
        "crop": crop,
        "pixels": crop * 100,
        "score": torch.rand(b, num_landmarks, generator=gen),
        "nmes": {"nme_io": torch.rand(b, generator=gen, dtype=F64), "nme_ip": torch.rand(b, generator=gen)},
    }


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # merge_state does not count as update
def test_collector_gathers_sorted_rows_and_two_ranks_equal_one():
    names = [f"face{i}" for i in range(6)]
    parts = [batch([4, 1], seed=1), batch([0, 5], seed=2), batch([3], seed=3)]
    single = ResultsCollector(["nme_io", "nme_ip"], 3)
    rank0, rank1 = ResultsCollector(["nme_io", "nme_ip"], 3), ResultsCollector(["nme_io", "nme_ip"], 3)
    for k, part in enumerate(parts):
        single.update(**part)
        (rank0 if k % 2 == 0 else rank1).update(**part)
    merged = ResultsCollector(["nme_io", "nme_ip"], 3)
    merged.merge_state(rank0)
    merged.merge_state(rank1)
    expected = single.gather(names, distributed=False)
    got = collected_results(merged.compute(), 3, ["nme_io", "nme_ip"], names)
    assert expected.indices.tolist() == [0, 1, 3, 4, 5]  # sorted by index; image 2 never scored
    assert expected.names == ["face0", "face1", "face3", "face4", "face5"]
    first = parts[0]  # image 4 is the first row of the first batch
    np.testing.assert_array_equal(expected.landmarks_crop[3], first["crop"][0].double().numpy())
    np.testing.assert_array_equal(expected.landmarks[3], first["pixels"][0].double().numpy())
    np.testing.assert_array_equal(expected.nmes["nme_io"][3], first["nmes"]["nme_io"][0].numpy())
    assert expected.landmarks.dtype == np.float64 and expected.max_score.shape == (5, 3)
    for field in ("indices", "landmarks_crop", "landmarks", "max_score"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    for key in ("nme_io", "nme_ip"):
        np.testing.assert_array_equal(got.nmes[key], expected.nmes[key])
    assert single.gather(names, distributed=False) is None  # reset by gather; no update since


def test_an_image_scored_twice_is_an_error():
    collector = ResultsCollector(["nme_io"], 3)
    part = batch([1, 1])
    del part["nmes"]["nme_ip"]
    collector.update(**part)
    with pytest.raises(RuntimeError, match="scored twice"):
        collector.gather(None, distributed=False)


def test_a_single_image_loader_gives_one_row():
    """A loader of one image (e.g. a 1-image val split) gathers 0-d states: still one row, not an error."""
    state = {
        "index": torch.tensor(3),
        "crop": torch.arange(4, dtype=F64),
        "pixels": torch.arange(4, dtype=F64) * 10,
        "score": torch.tensor([0.5, 0.25]),
        "nme0": torch.tensor(0.125),
    }
    out = collected_results(state, num_landmarks=2, keys=["nme_io"], names=["a", "b", "c", "d"])
    assert out.names == ["d"] and out.indices.tolist() == [3]
    assert out.landmarks_crop.shape == (1, 2, 2) and out.landmarks[0, 1].tolist() == [20.0, 30.0]
    assert out.nmes["nme_io"].tolist() == [0.125]


def test_a_subset_mask_must_cover_its_loader():
    with pytest.raises(ValueError, match="subset 'a' needs a boolean mask of shape \\(2,\\)"):
        LoaderPlan(("x", "y"), {"a": np.ones(3, dtype=bool)})
    with pytest.raises(ValueError, match="boolean mask"):
        LoaderPlan(("x", "y"), {"a": np.ones(2)})


# -- the plan a data module returns ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """`<data.root>` whose `synthetic/` the data module's source renders: 4 train, 2 + 1 test faces."""
    root = tmp_path_factory.mktemp("evaldata")
    faces = SyntheticFaces(n_train=4, n_common=2, n_challenge=1, n_wild=0, image_size=64, seed=3)
    dm = LandmarkDataModule(
        meta="synthetic", root=str(root), cache_dir=str(root / "cache"), input_size=64, num_workers=0,
        load_unlabeled=False, sources={"synthetic": faces}, prepare_workers=1,
    )  # fmt: skip
    dm.prepare_data()
    return root


def datamodule(root: Path, **kwargs) -> LandmarkDataModule:
    dm = LandmarkDataModule(
        meta="synthetic", root=str(root), cache_dir=str(root / "cache"), input_size=64, num_workers=0,
        load_unlabeled=False, prepare_workers=1, **kwargs,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_the_test_plan_of_a_small_synthetic_dataset(tiny_root):
    dm = datamodule(tiny_root)
    assert isinstance(dm, EvaluationData)
    plan = dm.evaluation_plan("test")
    assert isinstance(plan, EvalPlan) and plan.num_landmarks == 68
    assert [m.key for m in plan.metrics] == ["nme_io", "nme_ip"]
    assert plan.metrics[0] == MetricSpec("nme_io", "inter_ocular", ((36,), (45,)))
    (loader,) = plan.loaders  # one test split, three subsets scored on it
    assert loader.names == ("common_synth_00000", "common_synth_00001", "challenge_synth_00000")
    assert plan.subset_keys == ["synthetic_full", "synthetic_common", "synthetic_challenge"]
    masks = {k: m.tolist() for k, m in loader.subsets.items()}
    assert masks == {
        "synthetic_full": [True, True, True],
        "synthetic_common": [True, True, False],
        "synthetic_challenge": [False, False, True],
    }
    assert dm.evaluation_plan("val").subset_keys == plan.subset_keys  # validation on the test subsets
    with pytest.raises(ValueError, match="stage must be"):
        dm.evaluation_plan("fit")


def test_the_val_plan_of_a_held_out_split(tiny_root):
    dm = datamodule(tiny_root, val_fraction=0.5)
    (loader,) = dm.evaluation_plan("val").loaders
    assert loader.names == tuple(dm.val_set.names) and len(loader.names) == 2
    assert list(loader.subsets) == ["synthetic_val"] and loader.subsets["synthetic_val"].all()
    assert dm.evaluation_plan("test").subset_keys[0] == "synthetic_full"


# -- prepared sources --------------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.folders: list[Path] = []

    def prepare(self, folder: Path) -> None:
        self.folders.append(Path(folder))
        options = dict(n_train=2, n_common=1, n_challenge=1, n_wild=0, image_size=64, progress=False)
        generate_dataset(folder, **options)


def test_a_source_prepares_its_folder_before_the_splits_are_read(tmp_path):
    recorder = Recorder()
    assert isinstance(recorder, PreparedSource)
    dm = LandmarkDataModule(
        meta="synthetic", root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), input_size=64,
        num_workers=0, load_unlabeled=False, prepare_workers=1, sources={"synthetic": recorder},
    )  # fmt: skip
    dm.prepare_data()
    assert recorder.folders == [tmp_path / "data" / "synthetic"]
    dm.setup("fit")
    assert len(dm.train_set) == 2
    assert "sources" not in dm.hparams  # objects stay out of the checkpoint's hyperparameters


def test_sources_are_checked_when_the_datamodule_is_built(tmp_path):
    args = dict(meta="synthetic", root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="data.sources.300W: dataset 'synthetic' reads no folder '300W'"):
        LandmarkDataModule(**args, sources={"300W": Recorder()})
    with pytest.raises(TypeError, match="data.sources.synthetic must have a prepare\\(folder\\) method"):
        LandmarkDataModule(**args, sources={"synthetic": {"n_train": 2}})
    assert LandmarkDataModule(**args, sources={"synthetic": None}).sources == {}  # switched off


def test_synthetic_faces_writes_what_generate_dataset_writes(tmp_path):
    options = dict(n_train=2, n_common=1, n_challenge=1, n_wild=1, image_size=48, seed=7, progress=False)
    generate_dataset(tmp_path / "direct", **options)
    SyntheticFaces(**options, face_fraction=(0.4, 0.7)).prepare(tmp_path / "source")
    direct = sorted(p.relative_to(tmp_path / "direct") for p in (tmp_path / "direct").rglob("*"))
    source = sorted(p.relative_to(tmp_path / "source") for p in (tmp_path / "source").rglob("*"))
    assert direct == source and len(direct) > 8
    for rel in direct:
        if (tmp_path / "direct" / rel).is_file():
            assert (tmp_path / "direct" / rel).read_bytes() == (tmp_path / "source" / rel).read_bytes(), rel
    manifest = json.loads((tmp_path / "source" / "synthetic.json").read_text())
    assert manifest["seed"] == 7
    with pytest.raises(TypeError, match="SyntheticFaces: unknown option\\(s\\) \\['n_trian'\\]"):
        SyntheticFaces(n_trian=2, n_common=1, n_challenge=1, n_wild=0)
    with pytest.raises(TypeError, match="SyntheticFaces: missing a required argument: 'n_wild'"):
        SyntheticFaces(n_train=2, n_common=1, n_challenge=1)


# -- layering ----------------------------------------------------------------------------------------------
def test_evaluation_imports_no_framework_and_not_the_datamodule():
    code = (
        "import sys, pipnet_lit.evaluation\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'lightning', 'lightning_fabric', 'pytorch_lightning', 'hydra', 'omegaconf'} "
        "or m == 'pipnet_lit.datasets.datamodule')\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_datamodule_does_not_import_the_synthetic_generator():
    code = (
        "import sys, pipnet_lit.datasets.datamodule\n"
        "assert 'pipnet_lit.synthetic' not in sys.modules, 'the data module imports pipnet_lit.synthetic'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
