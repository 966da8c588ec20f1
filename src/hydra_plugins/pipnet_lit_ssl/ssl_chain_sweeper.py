"""A Hydra sweeper that runs curriculum self-training chains stage by stage.

``hydra/sweeper=ssl_chain`` (selected by the SSL experiments, with ``hydra.mode: MULTIRUN``): the sweep's
hyperparameter combinations (command-line sweeps such as ``model.num_nb=5,10`` and
``hydra.sweeper.params``, as with Hydra's basic sweeper) each define one chain. Stage k launches round k
of every chain whose round k is not done, as one batch through the configured launcher (basic, joblib,
submitit: on a cluster every round of every chain is its own job, the chains in parallel), then stage
k + 1. Chain folders are ``<hydra.sweep.dir>/<ssl.chain>/round_<k>``; a round with ``done.json`` is
skipped, so the same command resumes a killed chain.
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

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        cfg = self.config
        schedule = list(OmegaConf.select(cfg, "ssl.schedule", default=None) or [])
        if OmegaConf.select(cfg, "ssl", default=None) is None:
            raise ValueError(
                "hydra/sweeper=ssl_chain runs self-training chains: the config needs an `ssl:` node"
            )
        combos, swept = self._combinations(arguments)
        base = str(OmegaConf.select(cfg, "run_name"))
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        (sweep_dir / base).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, sweep_dir / base / "multirun.yaml")
        chains = [(chain_name(base, combo, swept), combo) for combo in combos]
        names = [c for c, _ in chains]
        log.info(f"ssl_chain: {len(chains)} chain(s) x {len(schedule) + 1} rounds in {sweep_dir}: {names}")
        returns = []
        job_idx = 0
        for k in range(len(schedule) + 1):
            batch = [
                [*combo, f"ssl.chain='{chain}'", f"ssl.round={k}"]
                for chain, combo in chains
                if not (sweep_dir / chain / f"round_{k}" / "done.json").is_file()
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
        return returns
