"""One round of curriculum self-training as an ordinary Hydra job (``ssl.round=k``).

A chain's rounds live side by side in the chain folder, ``outputs/<task_name>/<chain>/round_<k>/`` (the
layout and the meaning of "round done" are `pipnet_lit.ssl.layout`'s). Round 0 trains on the labeled split
alone; round k >= 1 pseudo-labels the unlabeled pool with round k-1's final model (the checkpoint its
manifest records), then trains a freshly initialized network (ImageNet backbone when ``model.pretrained``,
new head, optimizer and schedule) on labeled + pseudo-labeled faces, each pseudo-label carrying the round's
task (``ssl.schedule[k-1]``: ``cls3``, ``cls2`` or ``std``). Every round is tested on the dataset's test
subsets, and ``rounds.json`` / ``rounds.md`` in the chain folder gather the finished rounds.

Before anything else a job compares its config with the chain's (``chain.json``, `chain_config.py`). A
finished round returns its recorded metrics at once; a killed round resumes from its ``last.ckpt`` (the SSL
experiments set ``ckpt_path: last``); a round whose ``done.json`` cannot be read re-tests its own final
model. Pseudo-labels are reused when the checkpoint they came from, the pool and the pseudo-label settings
all match (their manifest's ``key``). When the pool has true landmarks, the pseudo-labels are scored against
them before training (`diagnostics.py`); the truth never reaches training or the filter.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipnet_lit.datasets.pseudo_labels import read_pseudo_label_manifest, write_pseudo_labels
from pipnet_lit.faults import kill_point
from pipnet_lit.files import atomic_write_text, file_sha256, read_json_object, write_json_atomic
from pipnet_lit.jobs import Job, build_job, closing_loggers, fit_and_test, load_trained_model
from pipnet_lit.presentation import format_metric
from pipnet_lit.random_state import preserved_random_state
from pipnet_lit.run_results import tested_results
from pipnet_lit.ssl.chain_config import check_chain_config, defining_config
from pipnet_lit.ssl.layout import (
    ROUNDS_JSON,
    ROUNDS_MD,
    RoundState,
    default_checkpoint,
    done_path,
    manifest_path,
    mark_done,
    pseudo_label_dir,
    read_done,
    recorded_checkpoint,
    relative_to_round,
    round_dir,
    round_state,
    weights_checkpoint,
    write_round_manifest,
)
from pipnet_lit.ssl.pseudo_labels import merged_with_scores, predict_pool, select_confident

TASK_NAMES = ("std", "cls2", "cls3")
DIAGNOSTICS_JSON = "diagnostics.json"
DIAGNOSTICS_MD = "diagnostics.md"
DIAGNOSTICS_PNG = "confidence_vs_error.png"
#: Written by rank 0 when making the pseudo-labels failed, so that waiting processes stop.
FAILED_NAME = "failed.json"


def check_schedule(schedule: Any) -> list[str]:
    tasks = [str(t) for t in schedule]
    bad = [t for t in tasks if t not in TASK_NAMES]
    if bad:
        raise ValueError(f"ssl.schedule holds {bad}; each round's task is one of {TASK_NAMES}")
    return tasks


def check_launch(trainer: Any) -> None:
    """Refuse a trainer whose extra processes would re-run the command: inside a chain (a multirun of the
    ssl_chain sweeper) each of them would start the whole sweep again and race on the chain's folders."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    launcher = getattr(trainer.strategy, "launcher", None)
    if launcher is None or type(launcher).__name__ != "_SubprocessScriptLauncher":
        return
    if launcher.cluster_environment.creates_processes_externally:  # SLURM, torchrun: one task per process
        return
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise RuntimeError(
            "trainer=ddp outside SLURM / torchrun starts its other processes by re-running this command, "
            "which inside a self-training chain would start the whole chain again in each of them. Use "
            "trainer.strategy=ddp_spawn (the processes are started from inside the round), run the chain "
            "under SLURM (hydra/launcher=slurm, one task per GPU), or run one round with hydra.mode=RUN"
        )


def run_round(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run (or skip, when done) round ``cfg.ssl.round`` of the chain in ``cfg.paths.output_dir``'s parent."""
    import lightning as L
    from hydra.utils import instantiate

    k = int(cfg.ssl.round)
    schedule = check_schedule(cfg.ssl.schedule)
    if not 0 <= k <= len(schedule):
        raise ValueError(f"ssl.round={k} is outside the chain's rounds 0..{len(schedule)} (ssl.schedule)")
    out = Path(cfg.paths.output_dir)
    chain = out.parent
    if out.name != f"round_{k}":
        raise ValueError(
            f"round {k} must run in a folder named round_{k} (got {out}); the SSL experiments set "
            "hydra.sweep.subdir: ${ssl.chain}/round_${ssl.round}"
        )
    check_chain_config(
        chain,
        defining_config(cfg),
        chain_name=str(cfg.ssl.get("chain") or chain.name),
        allow_change=bool(cfg.ssl.get("allow_config_change", False)),
        schedule=schedule,
    )
    state = round_state(out)
    if state is RoundState.DONE:
        print(f"[ssl] {chain.name} round {k}: done already ({done_path(out)}), skipped")
        return (read_done(out) or {}).get("metrics", {}), {"cfg": cfg, "skipped": True}
    if state is RoundState.DAMAGED:
        warnings.warn(
            f"{done_path(out)} cannot be read: round {k} re-tests its own final model "
            f"({default_checkpoint(out)}) and writes it again",
            stacklevel=2,
        )

    started = time.time()
    L.seed_everything(int(cfg.seed) + k, workers=True)
    task = schedule[k - 1] if k > 0 else "std"
    read: dict[str, Any] = {"data": OmegaConf.to_container(cfg.data, resolve=True), "round": k, "task": task}
    diagnostics: dict[str, Any] | None = None
    with closing_loggers():
        job = build_job(cfg)
        check_launch(job.trainer)
        pseudo = None
        if k > 0:
            folder, read_extra, diagnostics = _pseudo_labels(cfg, job, chain, out, k, task)
            read.update(read_extra)
            pseudo = {"folder": str(folder), "task": task}
            _log_diagnostics(job, folder, diagnostics)
        datamodule = instantiate(cfg.data, load_unlabeled=k > 0, pseudo_labels=pseudo)
        metrics = fit_and_test(job, datamodule)
        ckpt = _final_model(job, out)
    if job.trainer.is_global_zero:
        if not ckpt.is_file() and k < len(schedule):
            raise RuntimeError(
                f"round {k} left no model for round {k + 1} (no {ckpt}), so it is not marked done: a round "
                "of a chain trains (train=true); run the same command without train=false"
            )
        results = tested_results(job.model, job.trainer)
        write_round_manifest(
            out,
            {
                "chain": str(cfg.ssl.get("chain") or chain.name),
                "read": read,
                "wrote": {
                    "checkpoint": relative_to_round(out, ckpt),
                    "checkpoint_sha256": file_sha256(ckpt) if ckpt.is_file() else None,
                    "test_metrics": "test_metrics.json",
                },
                "train_faces": len(datamodule.train_set) if datamodule.train_set is not None else 0,
                "pseudo_label_diagnostics": _summary(diagnostics),
            },
        )
        mark_done(
            out,
            {
                "round": k,
                "task": task,
                "results": results,
                "metrics": metrics,
                "pseudo_labels": _summary(diagnostics),
                "started_at": started,
                "finished_at": time.time(),
                "finished": _now(),
            },
        )
        write_rounds_report(chain, len(schedule))
    return metrics, job.objects(datamodule)


def _final_model(job: Job, out: Path) -> Path:
    """The round's final model: ``checkpoints/last.ckpt``. A run that saved none (``+debug=fast``, where
    Lightning writes no checkpoint) saves its weights to ``checkpoints/final_weights.ckpt`` so the next
    round has a model to start from. Rank 0 decides for every process (the save is collective)."""
    ckpt = default_checkpoint(out)
    missing = job.trainer.strategy.broadcast(not ckpt.is_file(), src=0)
    if not missing or not job.cfg.get("train", True):
        return ckpt
    weights = weights_checkpoint(out)
    job.trainer.save_checkpoint(weights, weights_only=True)
    return weights


def pseudo_label_key(cfg: DictConfig, checkpoint_sha256: str, pool: str, task: str) -> dict[str, Any]:
    """What pseudo-labels depend on: the model they came from, the pool and the settings. Reused only when
    all match."""
    options = cfg.ssl.get("pseudo_labels") or {}
    return {
        "checkpoint_sha256": checkpoint_sha256,
        "pool": pool,
        "settings": {
            "task": task,
            "threshold": options.get("threshold"),
            "top_fraction": options.get("top_fraction"),
            "merge": bool(cfg.model.get("merge", True)),
        },
    }


def _previous_model(chain: Path, k: int) -> tuple[Path, str | None]:
    """Round k-1's final model as its manifest records it, and its sha256 (recorded, else of the file)."""
    previous = round_dir(chain, k - 1)
    if round_state(previous) is not RoundState.DONE:
        raise RuntimeError(
            f"round {k} needs round {k - 1} finished first ({done_path(previous)} is missing or unreadable); "
            "run the whole chain (python -m pipnet_lit.train +experiment=<ssl experiment>), which runs the "
            "rounds in order"
        )
    checkpoint = recorded_checkpoint(previous)
    wrote = (read_json_object(manifest_path(previous)) or {}).get("wrote") or {}
    digest = wrote.get("checkpoint_sha256") if isinstance(wrote, dict) else None
    if digest is None and checkpoint.is_file():
        digest = file_sha256(checkpoint)
    return checkpoint, digest


def _pseudo_labels(
    cfg: DictConfig, job: Job, chain: Path, out: Path, k: int, task: str
) -> tuple[Path, dict[str, Any], dict[str, Any] | None]:
    """Round k's pseudo-labels in ``round_k/pseudo_labels`` (reused when their key matches), made by global
    rank 0 only (the others wait for its manifest). Returns (folder, manifest entries, diagnostics)."""
    from hydra.utils import instantiate

    checkpoint, digest = _previous_model(chain, k)
    pool_dm = instantiate(cfg.data, load_train=False, load_unlabeled=True)
    pool_dm.prepare_data()
    key = pseudo_label_key(cfg, digest or "", pool_dm.unlabeled_fingerprint(), task)
    folder = pseudo_label_dir(out)
    read = {"pseudo_labels": str(folder), "previous_checkpoint": str(checkpoint), "pseudo_label_key": key}
    existing = read_pseudo_label_manifest(folder)
    if existing is not None and existing.get("key") == key:
        print(f"[ssl] round {k}: pseudo-labels {folder} match (model, pool, settings): reused")
        return folder, read, read_json_object(folder / DIAGNOSTICS_JSON)
    if digest is None or not checkpoint.is_file():
        raise FileNotFoundError(
            f"round {k} pseudo-labels need round {k - 1}'s final model {checkpoint}, which is missing; "
            f"restore it, or re-run round {k - 1} (delete {done_path(round_dir(chain, k - 1))})"
        )
    if job.trainer.global_rank != 0:
        _wait_for(folder, key)
        return folder, read, read_json_object(folder / DIAGNOSTICS_JSON)
    (folder / FAILED_NAME).unlink(missing_ok=True)
    try:
        # the pass (building the previous model, its loader) draws nothing from the global generators: a
        # round trains on the same random stream whether it made its pseudo-labels or found them made
        with preserved_random_state():
            diagnostics = _make_pseudo_labels(cfg, job, pool_dm, checkpoint, folder, k, task, key)
    except BaseException as err:  # the other processes stop waiting and say why
        write_json_atomic(folder / FAILED_NAME, {"key": key, "error": f"{type(err).__name__}: {err}"})
        raise
    return folder, read, diagnostics


def _make_pseudo_labels(
    cfg: DictConfig,
    job: Job,
    pool_dm: Any,
    checkpoint: Path,
    folder: Path,
    k: int,
    task: str,
    key: dict[str, Any],
) -> dict[str, Any] | None:
    import torch
    from lightning.pytorch.accelerators import CUDAAccelerator

    module = load_trained_model(checkpoint)
    module.hparams.merge = key["settings"]["merge"]
    device = (
        torch.device("cuda", job.trainer.local_rank)
        if isinstance(job.trainer.accelerator, CUDAAccelerator)
        else torch.device("cpu")
    )
    module = module.to(device).eval()
    pool = pool_dm.setup_unlabeled()
    options = cfg.ssl.get("pseudo_labels") or {}
    started = time.time()
    names, landmarks, scores, landmark_scores = predict_pool(
        merged_with_scores(module), pool, batch_size=int(cfg.data.get("eval_batch_size") or 32), device=device
    )
    threshold, top_fraction = options.get("threshold"), options.get("top_fraction")
    keep = select_confident(scores, threshold, top_fraction)
    diagnostics = _diagnose(
        pool_dm, module, landmarks, scores, landmark_scores, task, threshold, top_fraction
    )
    if diagnostics is not None:
        _write_diagnostics(folder, diagnostics, k)
    if not keep.any() and not options.get("allow_empty", False):
        raise RuntimeError(
            f"round {k}: the pseudo-label filter (threshold={threshold}, top_fraction={top_fraction}) keeps "
            f"none of the pool's {len(names)} faces (their confidences span {scores.min():.4f} .. "
            f"{scores.max():.4f}); lower ssl.pseudo_labels.threshold, or set "
            "ssl.pseudo_labels.allow_empty=true to train on the labeled faces alone"
        )
    manifest = {
        "round": k,
        "task": task,
        "key": key,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": key["checkpoint_sha256"],
        "threshold": threshold,
        "top_fraction": top_fraction,
        "seconds": round(time.time() - started, 3),
        "diagnostics": _summary(diagnostics),
    }
    print(f"[ssl] round {k}: pseudo-labelled {int(keep.sum())}/{len(names)} faces of the pool, task {task}")
    write_pseudo_labels(folder, names, landmarks, scores, manifest, keep)
    return diagnostics


def _diagnose(
    pool_dm: Any,
    module: Any,
    landmarks: Any,
    scores: Any,
    landmark_scores: Any,
    task: str,
    threshold: float | None,
    top_fraction: float | None,
) -> dict[str, Any] | None:
    """Score the pseudo-labels against the pool's true landmarks, when it has them (None otherwise)."""
    from pipnet_lit.datasets.meta import CROP_NORMS, SCHEME_NORMS
    from pipnet_lit.ssl.diagnostics import pseudo_label_diagnostics

    truth = pool_dm.unlabeled_truth()
    if truth is None:
        return None
    spec = pool_dm.meta.metrics[0]
    # box norms need the source-image box, which crops no longer carry: crop-normalized error instead
    norm = spec.norm if spec.norm in SCHEME_NORMS + CROP_NORMS else "none"
    hp = module.hparams
    return pseudo_label_diagnostics(
        landmarks,
        truth,
        scores,
        norm=norm,
        norm_indices=[list(g) for g in spec.indices] if spec.indices is not None else None,
        task=task,
        grid=int(hp.input_size) // int(hp.net_stride),
        fr_threshold=float(hp.get("fr_threshold", 0.1)),
        threshold=threshold,
        top_fraction=top_fraction,
        landmark_scores=landmark_scores,
    )


def _write_diagnostics(folder: Path, diagnostics: dict[str, Any], k: int) -> None:
    from pipnet_lit.ssl.diagnostics import diagnostics_markdown, plot_confidence_vs_error

    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / DIAGNOSTICS_JSON, diagnostics)
    atomic_write_text(
        folder / DIAGNOSTICS_MD,
        diagnostics_markdown(diagnostics, title=f"Round {k} pseudo-labels against the pool's true landmarks")
        + "\n",
    )
    plot_confidence_vs_error(diagnostics, folder / DIAGNOSTICS_PNG)


def _summary(diagnostics: dict[str, Any] | None) -> dict[str, Any] | None:
    from pipnet_lit.ssl.diagnostics import summary_cells

    return None if diagnostics is None else summary_cells(diagnostics)


def _log_diagnostics(job: Job, folder: Path, diagnostics: dict[str, Any] | None) -> None:
    """The pseudo-labels' scores against the truth in the round's loggers (W&B: numbers and the plot)."""
    if diagnostics is None or not job.trainer.is_global_zero:
        return
    cells = {f"pseudo_labels/{k}": v for k, v in (_summary(diagnostics) or {}).items() if v is not None}
    from lightning.pytorch.loggers import WandbLogger

    for logger in job.loggers:
        logger.log_metrics(cells, step=0)
        png = folder / DIAGNOSTICS_PNG
        if isinstance(logger, WandbLogger) and png.is_file():
            logger.log_image(key="pseudo_labels/confidence_vs_error", images=[str(png)], step=0)


def _wait_for(folder: Path, key: dict[str, Any], timeout: float = 3600.0, poll: float = 2.0) -> Path:
    """Wait (another process than rank 0) until rank 0 has written pseudo-labels with ``key``, or failed."""
    start = time.time()
    while time.time() - start < timeout:
        found = read_pseudo_label_manifest(folder)
        if found is not None and found.get("key") == key:
            return folder
        failed = read_json_object(folder / FAILED_NAME)
        if failed is not None and failed.get("key") == key:
            raise RuntimeError(f"rank 0 failed to make the pseudo-labels {folder}: {failed.get('error')}")
        time.sleep(poll)
    raise TimeoutError(f"rank 0 did not write the pseudo-labels {folder} within {timeout:.0f} s")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def write_rounds_report(chain: Path, num_rounds: int) -> tuple[Path, Path]:
    """Gather the finished rounds' test results (and their pseudo-labels' scores against the truth, when
    the pool has it) into ``rounds.json`` and a ``rounds.md`` table (printed)."""
    rows = []
    for k in range(num_rounds + 1):
        done = read_done(round_dir(chain, k))
        if done is not None:
            rows.append(
                {
                    "round": k,
                    "task": done.get("task", "std"),
                    "results": done.get("results", {}),
                    "pseudo_labels": done.get("pseudo_labels"),
                }
            )
    subsets = list(dict.fromkeys(s for row in rows for s in row["results"]))
    write_json_atomic(chain / ROUNDS_JSON, {"chain": chain.name, "rounds": rows})
    keys: list[str] = []
    for row in rows:
        for values in row["results"].values():
            keys += [k for k in values if k not in keys]
    keys.sort(key=lambda k: (not k.startswith("nme"), k.startswith("auc"), k))  # NMEs, FR, then AUC
    pl_keys = list(dict.fromkeys(k for row in rows for k in (row["pseudo_labels"] or {})))
    header = ["round", "task"] + [f"{s} {k}" for s in subsets for k in keys] + [f"{k}" for k in pl_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["round"]), row["task"]]
        for subset in subsets:
            cells += [format_metric(key, row["results"].get(subset, {}).get(key)) for key in keys]
        pl = row["pseudo_labels"] or {}
        cells += [format_metric(k, pl.get(k)) for k in pl_keys]
        lines.append("| " + " | ".join(cells) + " |")
    text = (
        f"# {chain.name}: test results per round (NME and FR in %, AUC as a fraction)\n\n"
        + "\n".join(lines)
        + "\n"
    )
    if pl_keys:
        text += (
            "\npl_*: round k's pseudo-labels scored against the pool's true landmarks before training (NME, "
            "FR and share of landmarks in the true cell of the round's task grid, in %; Spearman "
            "correlation of confidence and error); the truth is never used for training or filtering.\n"
        )
        for row in rows:
            md = pseudo_label_dir(round_dir(chain, row["round"])) / DIAGNOSTICS_MD
            if row["pseudo_labels"] and md.is_file():
                text += "\n" + md.read_text(encoding="utf-8")
    md_path = chain / ROUNDS_MD
    kill_point("rounds_files")  # rounds.json is written; a kill here must not cost the chain anything
    atomic_write_text(md_path, text)
    print(text)
    return chain / ROUNDS_JSON, md_path
