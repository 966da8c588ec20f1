"""Optuna sweeper (hydra/sweeper=pipnet_optuna): search-space parsing, the objective guard, the ask/tell loop
with a fake launcher (batches, resume, failures), the hparams_search config, and end-to-end sweeps."""

from __future__ import annotations

import csv
import inspect
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_job import job_env
from hydra_plugins.pipnet_lit_optuna.optuna_sweeper import (
    OptunaSweeper,
    check_validation_objective,
    format_value,
    logged_metric_keys,
    objective_value,
    parse_search_space,
    suggest,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _parse_line(line: str) -> tuple[str, Any]:
    override = OverridesParser.create().parse_overrides([line])[0]
    return override.get_key_element(), override.value()


def _suggest_all(space, seed: int = 0, n: int = 1):
    """Suggest every parameter in ``n`` trials of a fresh in-memory study: [(trial, {key: override line})]."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((trial, {p.name: suggest(trial, p) for p in space}))
    return out


# --------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "distribution"),
    [
        ("choice(5, 8, 10, 15)", CategoricalDistribution([5, 8, 10, 15])),
        ("a,b", CategoricalDistribution(["a", "b"])),
        ("range(0, 50, 10)", IntDistribution(0, 40, step=10)),  # stop excluded, as Hydra's range()
        ("range(5, 0, -2)", IntDistribution(1, 5, step=2)),
        ("tag(log, range(1, 9))", IntDistribution(1, 8, log=True)),
        ("range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        ("interval(1, 20)", FloatDistribution(1.0, 20.0)),
        ("tag(log, interval(1e-5, 1e-3))", FloatDistribution(1e-5, 1e-3, log=True)),
    ],
)
def test_each_distribution_maps_to_optuna_and_back_to_an_override(text, distribution):
    (param,) = parse_search_space({"model.x": text})
    for trial, lines in _suggest_all([param], n=5):
        assert trial.distributions["model.x"] == distribution
        key, value = _parse_line(lines["model.x"])
        assert key == "model.x"
        assert value == trial.params["model.x"] and type(value) is type(trial.params["model.x"])
        if isinstance(distribution, IntDistribution | FloatDistribution):
            assert distribution.low <= value <= distribution.high
            if distribution.step:
                steps = (value - distribution.low) / distribution.step
                assert abs(steps - round(steps)) < 1e-9


def test_list_choices_fixed_values_and_command_line_precedence():
    space = parse_search_space(
        {
            "model.milestones": "choice([7, 9], [5, 8])",
            "seed": 3,
            "model.lr": "interval(0.1, 0.2)",
            "a": None,
        },
        ["model.lr=choice(0.5)", "+data.augment.rotate_deg=range(10, 11)", "~model.metrics", 'x="it\'s"'],
    )
    by_name = {p.name: p for p in space}
    assert [p.kind for p in space] == [
        "categorical",
        "fixed",
        "fixed",
        "categorical",
        "int",
        "fixed",
        "fixed",
    ]
    assert by_name["model.milestones"].choices == ("[7, 9]", "[5, 8]")  # Optuna categories: the texts
    assert by_name["seed"].line == "seed=3" and by_name["seed"].value == 3
    assert by_name["a"].line == "a=null" and by_name["a"].value is None
    assert by_name["model.lr"].choices == (0.5,)  # the command line replaced the params' interval
    ((trial, lines),) = _suggest_all(space)
    assert _parse_line(lines["model.milestones"])[1] in ([7, 9], [5, 8])
    assert lines["model.lr"] == "model.lr=0.5"
    assert lines["data.augment.rotate_deg"] == "+data.augment.rotate_deg=10"
    assert lines["model.metrics"] == "~model.metrics" and lines["x"] == 'x="it\'s"'
    assert set(trial.params) == {"model.milestones", "model.lr", "data.augment.rotate_deg"}


@pytest.mark.parametrize(
    "value", [None, True, 3, -2.5e-07, "resnet18", "it's \\ odd", "C:\\", "a\\'b", [1, "a b"], {"k": [0.5]}]
)
def test_format_value_round_trips_through_hydras_parser(value):
    assert _parse_line(f"k={format_value(value)}")[1] == value


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("tag(fancy, interval(0, 1))", "unknown tag"),
        ("tag(log, choice(1, 2))", "applies to range"),
        ("tag(log, interval(0, 1))", "low > 0"),
        ("interval(2, 1)", "low <= high"),
        ("tag(log, range(1, 9, 2))", "step 1"),
        ("range(5, 5)", "holds no value"),
    ],
)
def test_parser_rejects_what_optuna_cannot_sample(text, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_search_space({"model.x": text})
    assert "model.x" in str(info.value)


# -------------------------------------------------------------------------------------- the objective
def test_objective_guard_refuses_test_data():
    check_validation_objective("val/nme", 0.1, allow_test_objective=False)  # the sweep setting: fine
    with pytest.raises(
        ValueError, match=r"data\.val_fraction=0\.0: .* Set data\.val_fraction \(e\.g\. 0\.1\)"
    ):
        check_validation_objective("val/nme", 0.0, allow_test_objective=False)
    with pytest.raises(ValueError, match="allow_test_objective=true"):
        check_validation_objective("val/nme", None, allow_test_objective=False)
    with pytest.raises(
        ValueError, match=r"optimized_metric='test/synthetic_full/nme_io' is not a validation"
    ):
        check_validation_objective("test/synthetic_full/nme_io", 0.1, allow_test_objective=False)
    with pytest.raises(ValueError, match="needs optimized_metric"):
        check_validation_objective(None, 0.1, allow_test_objective=False)
    check_validation_objective("test/synthetic_full/nme_io", 0.0, allow_test_objective=True)


def test_objective_value_names_the_metric_and_the_logged_keys(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,train/loss,val/nme\n0,1,2.0,0.5\n")
    assert logged_metric_keys(tmp_path) == ["train/loss", "val/nme"]
    assert objective_value(0.25, "val/nme", tmp_path) == 0.25
    assert objective_value({"val/nme": 0.5, "val/x": 1.0}, "val/nme", tmp_path) == 0.5
    for bad in (None, math.nan, "n/a"):
        with pytest.raises(ValueError, match=r"optimized_metric='val/nmee'.*\['train/loss', 'val/nme'\]"):
            objective_value(bad, "val/nmee", tmp_path)
    with pytest.raises(ValueError, match=r"\['val/a', 'val/b'\]"):
        objective_value({"val/a": 1.0, "val/b": 2.0}, "val/nme", tmp_path)


# ------------------------------------------------------------------- the ask/tell loop, fake launcher
class FakeLauncher:
    """Runs 'jobs' in-process: the objective is (x - 0.3)^2 of the `x=` override; `fail` maps a trial
    number to an exception (or the string 'none': the job returns None)."""

    def __init__(self, sweep_dir: Path, fail: dict[int, Any] | None = None) -> None:
        self.sweep_dir, self.fail, self.batches = sweep_dir, fail or {}, []

    def launch(self, batch: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        self.batches.append((initial_job_idx, [list(o) for o in batch]))
        results = []
        for overrides in batch:
            kv = dict(o.split("=", 1) for o in overrides if "=" in o)
            number = int(kv["hydra.sweep.subdir"].removeprefix("trial_"))
            folder = self.sweep_dir / f"trial_{number}"
            folder.mkdir(parents=True)
            (folder / "metrics.csv").write_text("epoch,step,val/nme,val/d_val/nme_io\n")
            outcome = self.fail.get(number)
            if isinstance(outcome, BaseException):
                results.append(JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=outcome))
            else:
                value = None if outcome == "none" else (float(kv["x"]) - 0.3) ** 2
                results.append(
                    JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=value)
                )
        return results


def _sweeper(tmp_path: Path, fail=None, *, val_fraction=0.1, metric="val/nme", **kwargs) -> OptunaSweeper:
    sweep_dir = tmp_path / "sweep"
    kwargs.setdefault("storage", f"sqlite:///{tmp_path}/sweep.db")
    sweeper = OptunaSweeper(params={"x": "interval(0, 1)", "y": "choice(a, b)", "fixed": 7}, **kwargs)
    sweeper.config = OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(sweep_dir)}},
            "optimized_metric": metric,
            "allow_test_objective": False,
            "data": {"val_fraction": val_fraction},
        }
    )
    sweeper.launcher = FakeLauncher(sweep_dir, fail)
    return sweeper


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path}/sweep.db")


def test_batches_of_n_jobs_and_resume_counts_finished_trials(tmp_path):
    sweeper = _sweeper(tmp_path, n_trials=3, n_jobs=2)
    sweeper.sweep(["seed=5"])
    batches = sweeper.launcher.batches
    assert [(idx, len(b)) for idx, b in batches] == [(0, 2), (2, 1)]
    first = batches[0][1][0]
    assert first[0].startswith("x=") and first[1] in ("y='a'", "y='b'")
    assert first[2:] == ["fixed=7", "seed=5", "hydra.sweep.subdir=trial_0"]
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for t in study.trials:
        assert t.value == pytest.approx((t.params["x"] - 0.3) ** 2, abs=1e-12)
        assert t.user_attrs["output_dir"] == str(tmp_path / "sweep" / f"trial_{t.number}")
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    best = min(study.trials, key=lambda t: t.value)
    assert results.best.number == best.number and results.best.value == best.value
    assert results.trials.complete == 3 and (tmp_path / "sweep" / "multirun.yaml").is_file()

    again = _sweeper(tmp_path, n_trials=5, n_jobs=4)  # a killed/extended sweep: only the missing 2 run
    again.sweep([])
    assert [(idx, len(b)) for idx, b in again.launcher.batches] == [(0, 2)]
    assert [b[-1] for b in again.launcher.batches[0][1]] == [
        "hydra.sweep.subdir=trial_3",
        "hydra.sweep.subdir=trial_4",
    ]
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    old = {(t.params["x"], t.params["y"]) for t in study.trials[:3]}
    assert not old & {(t.params["x"], t.params["y"]) for t in study.trials[3:]}  # no replayed draws

    done = _sweeper(tmp_path, n_trials=5)
    done.sweep([])
    assert done.launcher.batches == []


def test_crashed_trial_is_failed_and_the_error_reraised(tmp_path):
    sweeper = _sweeper(tmp_path, fail={1: RuntimeError("CUDA out of memory")}, n_trials=3)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        sweeper.sweep([])
    states = [t.state for t in _study(tmp_path).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    assert "CUDA out of memory" in _study(tmp_path).trials[1].user_attrs["error"]


def test_max_failure_rate_tolerates_failures_and_reruns_them(tmp_path):
    sweeper = _sweeper(tmp_path, fail={1: ValueError("diverged")}, n_trials=3, max_failure_rate=0.5)
    sweeper.sweep([])
    states = [t.state for t in _study(tmp_path).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]


def test_missing_metric_fails_the_trial_with_the_logged_keys(tmp_path):
    sweeper = _sweeper(tmp_path, fail={0: "none"}, n_trials=2)
    with pytest.raises(ValueError, match=r"returned None for optimized_metric='val/nme'.*'val/d_val/nme_io'"):
        sweeper.sweep([])
    assert [t.state for t in _study(tmp_path).trials] == [TrialState.FAIL]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 0.0}, "data.val_fraction=0"),
        ({"metric": "test/d_full/nme_io"}, "not a validation metric"),
    ],
)
def test_sweep_refuses_test_objectives_before_launching(tmp_path, kwargs, match):
    sweeper = _sweeper(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match):
        sweeper.sweep([])
    assert sweeper.launcher.batches == [] and not (tmp_path / "sweep.db").exists()
    with pytest.raises(ValueError, match="cannot be searched"):
        _sweeper(tmp_path).sweep(["data.val_fraction=0,0.1"])
    allowed = _sweeper(tmp_path, n_trials=1, **kwargs)
    allowed.sweep(["allow_test_objective=true"])  # a fixed override from the command line counts
    assert len(allowed.launcher.batches) == 1


def test_in_memory_study_refuses_a_used_folder(tmp_path):
    (tmp_path / "sweep" / "trial_0").mkdir(parents=True)
    sweeper = _sweeper(tmp_path, n_trials=1, storage=None)
    with pytest.raises(FileExistsError, match="trial_0 already exists"):
        sweeper.sweep([])
    assert sweeper.launcher.batches == []


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="hydra.sweeper.sampler='grid'"):
        OptunaSweeper(sampler="grid")
    with pytest.raises(ValueError, match="max_failure_rate"):
        OptunaSweeper(max_failure_rate=1.0)
    with pytest.raises(ValueError, match="direction"):
        OptunaSweeper(direction="min")


# ------------------------------------------------------------------------ the hparams_search config
def test_hparams_search_config_composes_and_searches_existing_keys():
    from hydra import compose, initialize_config_dir

    from pipnet_lit.config import CONFIG_DIR
    from pipnet_lit.datasets.transforms import build_train_transform

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["+experiment=synthetic", "hparams_search=pipnet_optuna"],
            return_hydra_config=True,
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    assert (cfg.optimized_metric, cfg.data.val_fraction, sweeper.sampler) == ("val/nme", 0.1, "tpe")
    assert sweeper.n_trials == 20 and sweeper.direction == "minimize"
    space = {p.name: p for p in parse_search_space(sweeper.params)}
    assert space["model.lr"].log and (space["model.lr"].low, space["model.lr"].high) == (1e-5, 1e-3)
    assert space["model.num_nb"].choices == (5, 8, 10, 15)
    assert (space["model.cls_weight"].low, space["model.cls_weight"].high) == (1.0, 20.0)
    augment_args = set(inspect.signature(build_train_transform).parameters)
    for name in space:  # every searched key exists, so plain `key=value` overrides work
        assert OmegaConf.select(cfg, name) is not None, name
        if name.startswith("data.augment."):
            assert name.removeprefix("data.augment.") in augment_args
    assert {"data.augment.rotate_deg", "data.augment.translate_px", "data.augment.occlusion_max"} <= set(
        space
    )


# --------------------------------------------------------------------------------------- end to end
def _command(*extra: str) -> list[str]:
    """Run from the working folder as a user does (no paths.root_dir: data/ and outputs/ land there)."""
    return [
        sys.executable, "-m", "pipnet_lit.train", "+experiment=synthetic", "hparams_search=pipnet_optuna",
        "run_name=tiny", "data.sources.synthetic.n_train=20", "data.sources.synthetic.n_common=2",
        "data.sources.synthetic.n_challenge=1", "data.sources.synthetic.n_wild=1",
        "data.sources.synthetic.image_size=80",
        "data.input_size=64", "data.batch_size=2", "data.eval_batch_size=4", "data.num_workers=0",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "trainer.log_every_n_steps=1",
        "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", *extra,
    ]  # fmt: skip


def _last_logged(path: Path, key: str) -> float:
    values = [row[key] for row in csv.DictReader(path.open()) if row.get(key)]
    return float(values[-1])


@pytest.mark.slow
def test_sweep_on_tiny_data_resumes_and_optimizes_the_validation_split(tmp_path):
    base = tmp_path / "outputs" / "train" / "optuna"
    first = subprocess.run(
        _command("hydra.sweeper.n_trials=2"), cwd=tmp_path, env=job_env(), capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in (base / "tiny").glob("trial_*")) == ["trial_0", "trial_1"]
    kept = {
        n: (base / "tiny" / f"trial_{n}" / "checkpoints" / "last.ckpt").stat().st_mtime_ns for n in (0, 1)
    }

    second = subprocess.run(
        _command("hydra.sweeper.n_trials=3"), cwd=tmp_path, env=job_env(), capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 of 3 trial(s) already finished; 1 to run" in second.stdout + second.stderr
    assert sorted(p.name for p in (base / "tiny").glob("trial_*")) == ["trial_0", "trial_1", "trial_2"]
    for n, mtime in kept.items():  # finished trials are not rerun
        assert (base / "tiny" / f"trial_{n}" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{base}/tiny.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for t in study.trials:
        folder = base / "tiny" / f"trial_{t.number}"
        metrics = folder / "csv" / "metrics.csv"
        header = next(csv.reader(metrics.open()))
        # validation is the held-out split only; the test subsets are neither validated nor tested
        assert [k for k in header if k.startswith(("val/", "test/"))] == [
            "val/nme", "val/synthetic_val/auc@0.10", "val/synthetic_val/fr@0.10",
            "val/synthetic_val/nme_io", "val/synthetic_val/nme_ip",
        ]  # fmt: skip
        assert t.value == pytest.approx(_last_logged(metrics, "val/nme"), rel=1e-6)
        assert t.value == pytest.approx(_last_logged(metrics, "val/synthetic_val/nme_io"), rel=1e-6)
        job = OmegaConf.load(folder / ".hydra" / "config.yaml")  # the trial ran the suggested values
        assert job.model.num_nb == t.params["model.num_nb"] and job.data.val_fraction == 0.1
        assert job.model.lr == pytest.approx(t.params["model.lr"], rel=1e-12)
        assert job.data.augment.translate_px == t.params["data.augment.translate_px"]
    assert len({t.params["model.lr"] for t in study.trials}) == 3


@pytest.mark.slow
def test_cli_refuses_to_tune_on_the_test_subsets(tmp_path):
    result = subprocess.run(
        _command("data.val_fraction=0"), cwd=tmp_path, env=job_env(), capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "Set data.val_fraction (e.g. 0.1)" in result.stderr
    assert not (tmp_path / "outputs" / "train" / "optuna" / "tiny.db").exists()
