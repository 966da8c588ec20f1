"""A Hydra sweeper on Optuna's ask/tell API: ``hydra/sweeper=pipnet_optuna``.

The search space is ``hydra.sweeper.params`` (and sweeps on the command line) in Hydra's override grammar:
``choice(a, b)`` or ``a,b`` -> ``suggest_categorical``; ``range(lo, hi, step)`` (Python semantics, ``hi``
excluded) -> ``suggest_int`` (``suggest_float`` with a step for floats); ``interval(lo, hi)`` ->
``suggest_float``; ``tag(log, interval(...))`` / ``tag(log, range(...))`` -> the same with ``log=True``. A
plain value is passed to every trial unchanged.

Each batch of ``n_jobs`` trials is asked from the study, handed to the configured launcher (basic, joblib,
submitit), and told back: the job's return value (``optimized_metric``) completes the trial; an exception,
a ``None`` or a NaN fails it, and the sweep re-raises unless ``max_failure_rate`` allows. Trial ``n`` runs
in ``<hydra.sweep.dir>/trial_<n>``. The study is created with ``load_if_exists``, by default in SQLite next
to the sweep folder (``<hydra.sweep.dir>.db``): a killed sweep resumes with the same command, and several
workers (or SLURM array jobs) can share one study. ``n_trials`` counts the study's finished trials
(complete or pruned), so only the missing ones run.

The sweep refuses to optimize test data: ``optimized_metric`` must be a ``val/`` metric and
``data.val_fraction`` > 0 (with 0, the official protocol, the validation sets are the test subsets), unless
``allow_test_objective=true``.
"""

import csv
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from pipnet_lit.files import atomic_write_text

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "cmaes")
DIRECTIONS = ("minimize", "maximize")
#: Keys that define what is optimized: never searched (a sweep over them compares different objectives).
OBJECTIVE_KEYS = ("optimized_metric", "data.val_fraction", "allow_test_objective")


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.pipnet_lit_optuna.optuna_sweeper.OptunaSweeper"
    # search space: key -> choice(...) | range(...) | interval(...) | tag(log, ...) | a fixed value
    params: dict[str, Any] = field(default_factory=dict)
    direction: str = "minimize"  # minimize | maximize
    sampler: str = "tpe"  # tpe | random | cmaes
    seed: int | None = 0  # offset by the study's trial count, so a resumed sweep draws new points
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {n_startup_trials: 5}
    n_trials: int = 20  # finished (complete or pruned) trials the study should hold
    n_jobs: int = 1  # trials per batch handed to the launcher
    study_name: str | None = None  # null: the sweep folder's name
    storage: str | None = "sqlite:///${hydra.sweep.dir}.db"  # null: in memory (no resume)
    max_failure_rate: float = 0.0  # failed / launched trials tolerated before the sweep re-raises


ConfigStore.instance().store(
    group="hydra/sweeper", name="pipnet_optuna", node=OptunaSweeperConf, provider="pipnet_lit"
)


@dataclass(frozen=True)
class SearchParam:
    """One key of the search space. ``kind``: categorical | int | float | fixed.

    ``choices`` are Optuna's categories (primitives; a list or dict choice becomes its override text) and
    ``texts`` the override value of each; ``low``/``high`` are inclusive bounds; ``line`` is a fixed
    override as written and ``value`` its parsed value.
    """

    key: str
    kind: str
    choices: tuple[Any, ...] = ()
    texts: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    line: str = ""
    value: Any = None

    @property
    def name(self) -> str:
        """The Optuna parameter name: the key without ``+``/``++``/``~``."""
        return self.key.lstrip("+~")


def format_value(value: Any) -> str:
    """A value as Hydra override text: ``null``, ``true``, ``1e-05``, ``'text'``, ``[1, 'a']``, ``{k: 1}``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # Hydra's quoted strings: only backslashes before a quote (or the closing quote) are escaped
        escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
        return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a Hydra override value")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _to_param(override: Override) -> SearchParam:
    key = override.get_key_element()
    if not override.is_sweep_override():
        value = None if override.is_delete() else override.value()
        return SearchParam(key=key, kind="fixed", line=str(override.input_line), value=value)
    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()) or set())
    if tags - {"log"}:
        raise ValueError(f"hydra.sweeper.params.{key}: unknown tag(s) {sorted(tags - {'log'})}; only `log`")
    log_scale = "log" in tags
    if isinstance(sweep, ChoiceSweep):
        if log_scale:
            raise ValueError(f"hydra.sweeper.params.{key}: tag(log, ...) applies to range() or interval()")
        values = list(sweep.list)
        if not values:
            raise ValueError(f"hydra.sweeper.params.{key}: empty choice")
        texts = tuple(format_value(v) for v in values)
        choices = tuple(
            v if v is None or isinstance(v, bool | int | float | str) else t
            for v, t in zip(values, texts, strict=True)
        )
        return SearchParam(key=key, kind="categorical", choices=choices, texts=texts)
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())  # Hydra's semantics: stop excluded, exact float steps
        if not values:
            raise ValueError(f"hydra.sweeper.params.{key}: {override.input_line!r} holds no value")
        step = abs(sweep.step)
        if all(_is_int(v) for v in values) and _is_int(sweep.step):
            if log_scale and step != 1:
                raise ValueError(f"hydra.sweeper.params.{key}: a log-scale range needs step 1 (Optuna)")
            return SearchParam(key, "int", low=min(values), high=max(values), step=step, log=log_scale)
        if log_scale:
            raise ValueError(
                f"hydra.sweeper.params.{key}: log scale with a float step; use tag(log, interval)"
            )
        return SearchParam(key, "float", low=float(min(values)), high=float(max(values)), step=float(step))
    if isinstance(sweep, IntervalSweep):
        low, high = float(sweep.start), float(sweep.end)
        if low > high or (log_scale and low <= 0):
            raise ValueError(
                f"hydra.sweeper.params.{key}: interval({low}, {high}) needs low <= high (and low > 0 on "
                "a log scale)"
            )
        return SearchParam(key, "float", low=low, high=high, log=log_scale)
    raise ValueError(
        f"hydra.sweeper.params.{key}: {override.input_line!r} is not supported; use choice(), range(), "
        "interval() or tag(log, ...)"
    )


def parse_search_space(
    params: Mapping[str, Any], arguments: Sequence[str] = (), config_loader: Any = None
) -> list[SearchParam]:
    """Parse ``hydra.sweeper.params`` then the command-line overrides (which win for the same key)."""
    lines = [f"{k}={v if isinstance(v, str) else format_value(v)}" for k, v in params.items()]
    parser = OverridesParser.create(config_loader=config_loader)
    space: dict[str, SearchParam] = {}
    for override in parser.parse_overrides(lines) + parser.parse_overrides(list(arguments)):
        param = _to_param(override)
        space.pop(param.name, None)
        space[param.name] = param
    return list(space.values())


def suggest(trial: Any, param: SearchParam) -> str:
    """Draw ``param`` from an Optuna trial; returns the override line for the trial's job."""
    if param.kind == "fixed":
        return param.line
    if param.kind == "categorical":
        value = trial.suggest_categorical(param.name, list(param.choices))
        index = next(i for i, c in enumerate(param.choices) if type(c) is type(value) and c == value)
        text = param.texts[index]
    elif param.kind == "int":
        step = int(param.step or 1)
        text = format_value(
            trial.suggest_int(param.name, int(param.low), int(param.high), step=step, log=param.log)
        )
    elif param.kind == "float":
        value = trial.suggest_float(param.name, param.low, param.high, step=param.step, log=param.log)
        text = format_value(float(value))
    else:
        raise ValueError(f"unknown search parameter kind {param.kind!r}")
    return f"{param.key}={text}"


def check_validation_objective(metric: Any, val_fraction: Any, allow_test_objective: bool) -> None:
    """Refuse a sweep that would tune on test data (a non-``val/`` metric, or ``val_fraction`` == 0)."""
    if allow_test_objective:
        return
    if not metric:
        raise ValueError("the sweep needs optimized_metric (the metric to optimize, e.g. val/nme)")
    if not str(metric).startswith("val/"):
        raise ValueError(
            f"optimized_metric={metric!r} is not a validation metric, and a sweep must not tune on test "
            "data: optimize a val/ metric (e.g. optimized_metric=val/nme) with a held-out split "
            "(data.val_fraction=0.1), or set allow_test_objective=true to tune on test data knowingly"
        )
    if val_fraction is None or float(val_fraction) <= 0:
        raise ValueError(
            f"data.val_fraction={val_fraction}: without a held-out split the validation sets are the test "
            f"subsets (the official protocol), so {metric} is a test metric. Set data.val_fraction "
            "(e.g. 0.1) to tune on a seeded hold-out of the training faces, or allow_test_objective=true "
            "to tune on test data knowingly"
        )


def logged_metric_keys(folder: Path) -> list[str]:
    """Metric names in the header of every Lightning ``metrics.csv`` under ``folder``."""
    keys: set[str] = set()
    for path in Path(folder).rglob("metrics.csv"):
        with path.open(newline="") as f:
            keys.update(next(csv.reader(f), []))
    return sorted(keys - {"epoch", "step"})


def objective_value(returned: Any, metric: str, folder: Path) -> float:
    """The trial's objective from the job's return value (a number, or a mapping holding ``metric``).

    Raises ValueError naming ``metric`` and the metrics that exist when it is missing, not a number or NaN.
    """
    value = returned.get(metric) if isinstance(returned, Mapping) else returned
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number):
        known = sorted(returned) if isinstance(returned, Mapping) else logged_metric_keys(folder)
        raise ValueError(
            f"the job returned {value!r} for optimized_metric={metric!r}, so the trial has no objective. "
            f"Metrics that exist (logged in {folder}): {known or 'none'}. Set optimized_metric to one of "
            "them, or find why the metric was not computed (or is NaN)"
        )
    return number


def make_sampler(name: str, seed: int | None, kwargs: Mapping[str, Any]) -> Any:
    """``tpe`` | ``random`` | ``cmaes`` -> an Optuna sampler seeded with ``seed``."""
    import optuna

    classes = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
    }
    if name not in classes:
        raise ValueError(f"hydra.sweeper.sampler={name!r}: choose one of {list(classes)}")
    return classes[name](seed=seed, **dict(kwargs))


def _open_storage(url: str | None) -> Any:
    import optuna

    if url is None:
        return optuna.storages.InMemoryStorage()
    engine_kwargs = None
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}  # workers wait for each other's writes
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


class OptunaSweeper(Sweeper):
    """Optuna ask/tell sweeps in batches through Hydra's launcher (see the module docstring)."""

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        direction: str = "minimize",
        sampler: str = "tpe",
        seed: int | None = 0,
        sampler_kwargs: Mapping[str, Any] | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        study_name: str | None = None,
        storage: str | None = None,
        max_failure_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction={direction!r}: choose one of {list(DIRECTIONS)}")
        if sampler not in SAMPLERS:
            raise ValueError(f"hydra.sweeper.sampler={sampler!r}: choose one of {list(SAMPLERS)}")
        if int(n_trials) < 0 or int(n_jobs) < 1:
            raise ValueError(
                f"hydra.sweeper: n_trials must be >= 0 and n_jobs >= 1, got {n_trials}, {n_jobs}"
            )
        if not 0.0 <= float(max_failure_rate) < 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate must be in [0, 1), got {max_failure_rate}")
        self.params = dict(params or {})
        self.direction, self.sampler, self.seed = direction, sampler, seed
        self.sampler_kwargs = dict(sampler_kwargs or {})
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.study_name, self.storage = study_name, storage
        self.max_failure_rate = float(max_failure_rate)
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _objective_setting(self, space: list[SearchParam], key: str) -> Any:
        """``key``'s value for every trial: a fixed search-space value, else the sweep's config."""
        for param in space:
            if param.name == key:
                if param.kind != "fixed":
                    raise ValueError(
                        f"hydra.sweeper.params: {key} defines the objective; it cannot be searched"
                    )
                return param.value
        assert self.config is not None
        return OmegaConf.select(self.config, key, default=None)

    def _open_study(self, sweep_dir: Path) -> Any:
        import optuna

        storage = _open_storage(self.storage)
        name = self.study_name or sweep_dir.name
        study = optuna.create_study(
            study_name=name, storage=storage, direction=self.direction, load_if_exists=True
        )
        if study.direction.name.lower() != self.direction:
            raise ValueError(
                f"study {name!r} in {self.storage} was created to {study.direction.name.lower()}, not to "
                f"{self.direction}: use another study_name (or hydra.sweep.dir)"
            )
        # a resumed sweep (or a second worker) must not replay the first one's random draws
        seed = None if self.seed is None else int(self.seed) + len(study.trials)
        sampler = make_sampler(self.sampler, seed, self.sampler_kwargs)
        log.info(f"pipnet_optuna: study {name!r} ({self.storage or 'in memory'}), {self.sampler} seed {seed}")
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)

    def sweep(self, arguments: list[str]) -> Any:
        from optuna.trial import TrialState

        assert self.config is not None and self.launcher is not None
        cfg = self.config
        loader = getattr(self.hydra_context, "config_loader", None)
        space = parse_search_space(self.params, arguments, loader)
        if not any(p.kind != "fixed" for p in space):
            raise ValueError(
                "pipnet_optuna: nothing to search; give hydra.sweeper.params (e.g. in hparams_search/) or "
                "a sweep on the command line such as model.lr='tag(log, interval(1e-5, 1e-3))'"
            )
        metric, val_fraction, allow = (self._objective_setting(space, k) for k in OBJECTIVE_KEYS)
        check_validation_objective(metric, val_fraction, bool(allow))
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(cfg))
        study = self._open_study(sweep_dir)

        def finished() -> int:
            return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

        log.info(
            f"pipnet_optuna: {finished()} of {self.n_trials} trial(s) already finished; "
            f"{max(0, self.n_trials - finished())} to run in {sweep_dir}"
        )
        returns, launched, failures, job_idx = [], 0, 0, 0
        while (remaining := self.n_trials - finished()) > 0:
            trials = [study.ask() for _ in range(min(self.n_jobs, remaining))]
            batch = []
            for trial in trials:
                folder = sweep_dir / f"trial_{trial.number}"
                if folder.exists():
                    for t in trials:
                        study.tell(t, state=TrialState.FAIL)
                    raise FileExistsError(
                        f"{folder} already exists but holds no trial {trial.number} of this study (another "
                        "study, or an in-memory one, ran there): use another hydra.sweep.dir or study storage"
                    )
                overrides = [suggest(trial, p) for p in space]
                trial.set_user_attr("overrides", overrides)
                trial.set_user_attr("output_dir", str(folder))
                batch.append([*overrides, f"hydra.sweep.subdir=trial_{trial.number}"])
            results = self.launcher.launch(batch, initial_job_idx=job_idx)
            job_idx += len(batch)
            errors: list[BaseException] = []
            for trial, result in zip(trials, results, strict=True):
                folder = sweep_dir / f"trial_{trial.number}"
                try:
                    value = objective_value(result.return_value, str(metric), folder)
                except Exception as error:  # the job's own exception, or no usable objective
                    log.error(f"pipnet_optuna: trial {trial.number} failed ({folder}): {error!r}")
                    trial.set_user_attr("error", repr(error)[:2000])
                    study.tell(trial, state=TrialState.FAIL)
                    errors.append(error)
                else:
                    study.tell(trial, value)
            launched += len(trials)
            failures += len(errors)
            returns.append(results)
            if errors and failures / launched > self.max_failure_rate:
                log.error(
                    f"pipnet_optuna: {failures} of {launched} trial(s) failed "
                    f"(max_failure_rate={self.max_failure_rate}); re-raising the first error"
                )
                raise errors[0]
        self._report(study, sweep_dir)
        return returns

    def _report(self, study: Any, sweep_dir: Path) -> None:
        """Log the best trial and write ``optimization_results.yaml`` into the sweep folder."""
        from optuna.trial import TrialState

        counts = {
            s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
            for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        }
        results: dict[str, Any] = {"study_name": study.study_name, "storage": self.storage}
        results.update(direction=self.direction, trials=counts)
        if counts["complete"]:
            best = study.best_trial
            results["best"] = {
                "number": best.number,
                "value": best.value,
                "params": best.params,
                "output_dir": best.user_attrs.get("output_dir"),
                "overrides": best.user_attrs.get("overrides"),
            }
            log.info(f"pipnet_optuna: best trial {best.number}: value {best.value} with {best.params}")
        atomic_write_text(
            sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results))
        )
