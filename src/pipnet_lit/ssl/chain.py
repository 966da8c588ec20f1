"""One round of curriculum self-training as an ordinary Hydra job (``ssl.round=k``).

A chain's rounds live side by side in the chain folder, ``outputs/<task_name>/<chain>/round_<k>/``, each
with its own checkpoints, CSV / W&B logs, ``pseudo_labels/`` (rounds >= 1), ``manifest.json`` (what the
round read and wrote) and ``done.json`` (written last: the round is finished). Round 0 trains on the
labeled split alone; round k >= 1 pseudo-labels the unlabeled pool with round k-1's final model, then trains
a freshly initialized network (ImageNet backbone when ``model.pretrained``, new head, optimizer and
schedule) on labeled + pseudo-labeled faces, each pseudo-label carrying the round's task
(``ssl.schedule[k-1]``: ``cls3``, ``cls2`` or ``std``). Every round is tested on the dataset's test subsets,
and ``rounds.json`` / ``rounds.md`` in the chain folder gather the finished rounds.

A job whose ``done.json`` exists returns its recorded metrics at once; a killed round resumes from its
``last.ckpt`` (the SSL experiments set ``ckpt_path: last``), and its pseudo-labels are reused when they came
from the same checkpoint (same sha256).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipnet_lit.datasets.cache import read_manifest, write_manifest
from pipnet_lit.reporting import tested_results
from pipnet_lit.ssl.pseudo_labels import (
    file_sha256,
    merged_with_scores,
    predict_pool,
    select_confident,
    write_pseudo_labels,
)

DONE_NAME = "done.json"
TASK_NAMES = ("std", "cls2", "cls3")


def round_dir(chain_dir: Path, k: int) -> Path:
    return Path(chain_dir) / f"round_{k}"


def is_done(folder: Path) -> bool:
    return read_manifest(Path(folder) / DONE_NAME) is not None


def check_schedule(schedule: Any) -> list[str]:
    tasks = [str(t) for t in schedule]
    bad = [t for t in tasks if t not in TASK_NAMES]
    if bad:
        raise ValueError(f"ssl.schedule holds {bad}; each round's task is one of {TASK_NAMES}")
    return tasks


def run_round(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run (or skip, when done) round ``cfg.ssl.round`` of the chain in ``cfg.paths.output_dir``'s parent."""
    import lightning as L
    from hydra.utils import instantiate

    from pipnet_lit.train import fit_and_test

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
    done = read_manifest(out / DONE_NAME)
    if done is not None:
        print(f"[ssl] {chain.name} round {k}: done already ({out / DONE_NAME}), skipped")
        return done.get("metrics", {}), {"cfg": cfg, "skipped": True}

    started = time.time()
    L.seed_everything(int(cfg.seed) + k, workers=True)
    task = schedule[k - 1] if k > 0 else "std"
    datamodule = instantiate(cfg.data, load_unlabeled=k > 0)
    read: dict[str, Any] = {"data": OmegaConf.to_container(cfg.data, resolve=True), "round": k, "task": task}
    if k > 0:
        previous = round_dir(chain, k - 1)
        if not is_done(previous):
            raise RuntimeError(
                f"round {k} needs round {k - 1} finished first ({previous / DONE_NAME} is missing); run "
                "the whole chain (python -m pipnet_lit.train +experiment=<ssl experiment>), which runs the "
                "rounds in order"
            )
        labels = _pseudo_labels(
            cfg, datamodule, previous / "checkpoints" / "last.ckpt", out / "pseudo_labels", k, task
        )
        datamodule.set_pseudo_labels(labels, task)
        read["pseudo_labels"] = str(labels)
        read["previous_checkpoint"] = str(previous / "checkpoints" / "last.ckpt")
    metrics, objects = fit_and_test(cfg, datamodule)
    if objects["trainer"].is_global_zero:
        results = tested_results(objects["model"], objects["trainer"])
        ckpt = out / "checkpoints" / "last.ckpt"
        write_manifest(
            out / "manifest.json",
            {
                "chain": chain.name,
                "read": read,
                "wrote": {
                    "checkpoint": str(ckpt),
                    "checkpoint_sha256": file_sha256(ckpt) if ckpt.is_file() else None,
                    "test_metrics": str(out / "test_metrics.json"),
                },
                "train_faces": len(datamodule.train_set) if datamodule.train_set is not None else 0,
            },
        )
        write_manifest(
            out / DONE_NAME,
            {
                "round": k,
                "task": task,
                "results": results,
                "metrics": metrics,
                "started_at": started,
                "finished_at": time.time(),
                "finished": _now(),
            },
        )
        write_rounds_report(chain, len(schedule))
    return metrics, objects


def _pseudo_labels(
    cfg: DictConfig, datamodule: Any, checkpoint: Path, folder: Path, k: int, task: str
) -> Path:
    """Pseudo-label the pool with ``checkpoint`` into ``folder`` (reused when already made from it)."""
    import torch

    from pipnet_lit.eval import load_module

    if not checkpoint.is_file():
        raise FileNotFoundError(f"round {k} pseudo-labels need the previous round's final model {checkpoint}")
    digest = file_sha256(checkpoint)
    existing = read_manifest(folder / "manifest.json")
    if existing is not None and existing.get("checkpoint_sha256") == digest:
        return folder
    if int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) != 0:
        return _wait_for(folder, digest)
    datamodule.prepare_data()
    datamodule.setup_unlabeled()
    module = load_module(checkpoint)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    device = "cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu"
    module = module.to(device).eval()
    pool = datamodule.unlabeled_set
    options = cfg.ssl.get("pseudo_labels") or {}
    started = time.time()
    names, landmarks, scores = predict_pool(
        merged_with_scores(module), pool, batch_size=int(cfg.data.get("eval_batch_size") or 32), device=device
    )
    keep = select_confident(scores, options.get("threshold"), options.get("top_fraction"))
    manifest = {
        "round": k,
        "task": task,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": digest,
        "pool": [str(p) for p in sorted({str(Path(x).parent.parent) for x in pool.image_paths})],
        "threshold": options.get("threshold"),
        "top_fraction": options.get("top_fraction"),
        "seconds": round(time.time() - started, 3),
    }
    print(
        f"[ssl] round {k}: pseudo-labelled {int(keep.sum())}/{len(names)} faces of the pool with task {task}"
    )
    return write_pseudo_labels(folder, names, landmarks, scores, manifest, keep)


def _wait_for(folder: Path, digest: str, timeout: float = 3600.0) -> Path:
    start = time.time()
    while time.time() - start < timeout:
        found = read_manifest(folder / "manifest.json")
        if found is not None and found.get("checkpoint_sha256") == digest:
            return folder
        time.sleep(2.0)
    raise TimeoutError(f"rank 0 did not write the pseudo-labels {folder} within {timeout:.0f} s")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def write_rounds_report(chain: Path, num_rounds: int) -> tuple[Path, Path]:
    """Gather the finished rounds' test results into ``rounds.json`` and a ``rounds.md`` table (printed)."""
    rows = []
    for k in range(num_rounds + 1):
        done = read_manifest(round_dir(chain, k) / DONE_NAME)
        if done is not None:
            rows.append({"round": k, "task": done.get("task", "std"), "results": done.get("results", {})})
    subsets = [s for row in rows for s in row["results"]]
    subsets = list(dict.fromkeys(subsets))
    write_manifest(chain / "rounds.json", {"chain": chain.name, "rounds": rows})
    keys: list[str] = []
    for row in rows:
        for values in row["results"].values():
            keys += [k for k in values if k not in keys]
    keys.sort(key=lambda k: (not k.startswith("nme"), k.startswith("auc"), k))  # NMEs, FR, then AUC
    header = ["round", "task"] + [f"{s} {k}" for s in subsets for k in keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["round"]), row["task"]]
        for subset in subsets:
            for key in keys:
                value = row["results"].get(subset, {}).get(key)
                cells.append(
                    "-"
                    if value is None
                    else (f"{value:.4f}" if key.startswith("auc") else f"{100 * value:.2f}")
                )
        lines.append("| " + " | ".join(cells) + " |")
    text = (
        f"# {chain.name}: test results per round (NME and FR in %, AUC as a fraction)\n\n"
        + "\n".join(lines)
        + "\n"
    )
    md = chain / "rounds.md"
    md.write_text(text, encoding="utf-8")
    print(text)
    return chain / "rounds.json", md


def load_rounds(chain: str | Path) -> dict[str, Any]:
    """The chain's ``rounds.json``."""
    return json.loads((Path(chain) / "rounds.json").read_text(encoding="utf-8"))
