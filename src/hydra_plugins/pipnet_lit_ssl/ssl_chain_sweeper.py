"""A Hydra sweeper that runs curriculum self-training chains stage by stage.

``hydra/sweeper=ssl_chain`` (selected by the SSL experiments, with ``hydra.mode: MULTIRUN``): the sweep's
hyperparameter combinations (command-line sweeps such as ``model.num_nb=5,10`` and
``hydra.sweeper.params``, as with Hydra's basic sweeper; ``ssl=curriculum,nocurriculum``, ``seed=0,1,2``,
``ssl.schedule=...`` alike) each define one chain, composed with its own config, so each runs its own
schedule to its end. Stage k launches round k of every chain that has one and whose round k is not done,
as one batch through the configured launcher (basic, joblib, submitit: on a cluster every round of every
chain is its own job, the chains in parallel), then stage k + 1. Chain folders are
``<hydra.sweep.dir>/<ssl.chain>/round_<k>`` (layout: ``pipnet_lit.ssl.layout``); finished rounds are
skipped, so the same command resumes a killed chain; a chain whose recorded config (``chain.json``)
differs from this command's is refused before anything runs. When the last stage ends, the chains' seed
aggregate is written to ``<hydra.sweep.dir>/<run_name>/summary/``.
"""

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from pipnet_lit.files import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class SSLChainSweeperConf:
    _target_: str = "hydra_plugins.pipnet_lit_ssl.ssl_chain_sweeper.SSLChainSweeper"
    # extra sweep dimensions in Hydra's override grammar, as the basic sweeper's params
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="ssl_chain", node=SSLChainSweeperConf, provider="pipnet_lit"
)

#: Overrides that pick the chain's stage; never part of a chain's name.
_STAGE_KEYS = ("ssl.round", "ssl.chain")


def chain_name(base: str, combo: list[str], swept: list[str]) -> str:
    """``base`` for a single chain, else ``base/<key=value,...>`` of the combination's swept values."""
    if not swept:
        return base
    text = ",".join(o for o in combo if o.split("=", 1)[0] in swept)
    return f"{base}/{re.sub(r'[^A-Za-z0-9_.,=+-]', '_', text) or 'default'}"


class SSLChainSweeper(Sweeper):
    """Runs every chain's round 0, then every chain's round 1, ... (see the module docstring)."""

    def __init__(self, params: dict[str, str] | None = None) -> None:
        super().__init__()
        self.params = dict(params or {})
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

    def _combinations(self, arguments: list[str]) -> tuple[list[list[str]], list[str]]:
        """Every combination of the sweep (basic-sweeper semantics), and the keys that vary."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        bad = [o.get_key_element() for o in overrides if o.get_key_element().lstrip("+~") in _STAGE_KEYS]
        if bad:
            raise ValueError(f"{bad} are set by the ssl_chain sweeper itself; do not pass them")
        swept = [o.get_key_element() for o in overrides if o.is_sweep_override()]
        return BasicSweeper.split_arguments(overrides, None)[0], swept

    def _chains(self, arguments: list[str], sweep_dir: Path) -> list[tuple[str, list[str], list[str]]]:
        """(chain name, overrides, schedule) of every chain: each chain's own config is composed (as its
        jobs will be), so a sweep over ``ssl`` or ``ssl.schedule`` gives each chain its own rounds. The
        chain's config is recorded in (or checked against) its ``chain.json`` before any stage runs."""
        from pipnet_lit.ssl.chain import check_schedule
        from pipnet_lit.ssl.chain_config import check_chain_config, defining_config

        assert self.config is not None
        combos, swept = self._combinations(arguments)
        base = str(OmegaConf.select(self.config, "run_name"))
        chains = []
        for combo in combos:
            name = chain_name(base, combo, swept)
            job_cfg = self.hydra_context.config_loader.load_sweep_config(
                self.config, [*combo, f"ssl.chain='{name}'", "ssl.round=0"]
            )
            schedule = check_schedule(OmegaConf.select(job_cfg, "ssl.schedule", default=None) or [])
            check_chain_config(
                sweep_dir / name,
                defining_config(job_cfg),
                chain_name=name,
                allow_change=bool(OmegaConf.select(job_cfg, "ssl.allow_config_change", default=False)),
                swept=[o for o in combo if o.split("=", 1)[0] in swept],
                schedule=schedule,
            )
            chains.append((name, combo, schedule))
        return chains

    def sweep(self, arguments: list[str]) -> Any:
        from pipnet_lit.ssl.layout import is_done, round_dir

        assert self.config is not None and self.launcher is not None
        cfg = self.config
        if OmegaConf.select(cfg, "ssl", default=None) is None:
            raise ValueError(
                "hydra/sweeper=ssl_chain runs self-training chains: the config needs an `ssl:` node"
            )
        base = str(OmegaConf.select(cfg, "run_name"))
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        (sweep_dir / base).mkdir(parents=True, exist_ok=True)
        atomic_write_text(sweep_dir / base / "multirun.yaml", OmegaConf.to_yaml(cfg))
        chains = self._chains(arguments, sweep_dir)
        stages = max(len(schedule) for _, _, schedule in chains) + 1
        log.info(
            f"ssl_chain: {len(chains)} chain(s) in {sweep_dir}: "
            + ", ".join(f"{name} ({len(schedule) + 1} rounds)" for name, _, schedule in chains)
        )
        returns = []
        job_idx = 0
        for k in range(stages):
            batch = [
                [*combo, f"ssl.chain='{name}'", f"ssl.round={k}"]
                for name, combo, schedule in chains
                if k <= len(schedule) and not is_done(round_dir(sweep_dir / name, k))
            ]
            if not batch:
                log.info(f"ssl_chain: stage {k}: every chain's round {k} is done, skipped")
                continue
            log.info(f"ssl_chain: stage {k}: launching {len(batch)} job(s)")
            results = self.launcher.launch(batch, initial_job_idx=job_idx)
            job_idx += len(batch)
            failed = [r for r in results if r.status == JobStatus.FAILED]
            for r in results:
                _ = r.return_value  # re-raises a failed job's exception
            if failed:
                raise RuntimeError(f"ssl_chain: {len(failed)} job(s) of stage {k} failed")
            returns.append(results)
        self._summarize(sweep_dir / base)
        return returns

    def _summarize(self, folder: Path) -> None:
        """The seed aggregate of the chains (mean +- std per round and variant), when the last stage ends."""
        from pipnet_lit.ssl.aggregate import summarize_chains

        assert self.config is not None
        wandb = None
        if OmegaConf.select(self.config, "logger.wandb", default=None) is not None:
            wandb = {
                "project": str(OmegaConf.select(self.config, "logger.wandb.project", default="pipnet-lit")),
                "group": folder.name,
                "save_dir": str(folder),
            }
        try:
            paths = summarize_chains([folder], folder / "summary", wandb=wandb)
        except Exception as err:  # the rounds are on disk; the summary can be made again
            log.error(
                f"ssl_chain: the seed summary of {folder} failed ({err}); make it with "
                f"python -m pipnet_lit.compare {folder}"
            )
            return
        log.info(f"ssl_chain: seed summary in {', '.join(str(p) for p in paths.values())}")
