"""One LightningDataModule for every benchmark, and for compositions of several downloads.

A dataset description (``meta/<name>.yaml`` or a user's YAML) names splits, each read from its download by
a format reader and cropped once into the crop cache (``cache.py``); roles then say which splits train,
which subsets evaluate and which split is the unlabeled pool. So 300W alone, WFLW with its attribute
subsets, or 300W labeled + CelebA unlabeled + COFW-68 / WFLW-68 tests are all the same code.

Evaluation reads each split once: subsets (300W ``common`` / ``challenge`` / ``full``, WFLW's attribute
subsets) are index selections of it, and the module scores every subset from that one pass. What it scores
is one typed plan (``evaluation_plan(stage)``, a `pipnet_lit.evaluation.EvalPlan`).

A download that is made rather than fetched (the synthetic faces) is one more *source*: an object with
``prepare(folder: Path) -> None`` (`PreparedSource`) that ``prepare_data`` runs on its folder before reading.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from pipnet_lit.datasets.cache import CachedSplit, exclusive_lock, prepare_split, read_split
from pipnet_lit.datasets.dataset import CropDataset
from pipnet_lit.datasets.meta import DatasetMeta, SubsetSpec, load_dataset_meta
from pipnet_lit.datasets.readers import read_records
from pipnet_lit.datasets.records import BadInput, MissingDownloadError
from pipnet_lit.datasets.transforms import build_eval_transform, build_train_transform
from pipnet_lit.evaluation import EvalPlan, LoaderPlan
from pipnet_lit.pip import TASKS, compute_meanface


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return (
        OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value
    )


@runtime_checkable
class PreparedSource(Protocol):
    """A raw download that is made on the spot (e.g. `pipnet_lit.synthetic.SyntheticFaces`).

    ``prepare(folder)`` materializes the download in ``folder`` (``<data.root>/<the splits' dir>``) in the
    layout its reader expects; it must be idempotent (a no-op when the folder already holds it) and
    deterministic (the same arguments write the same files).
    """

    def prepare(self, folder: Path) -> None: ...


@dataclass
class EvalPool:
    """One evaluation loader: a cached split read once, and the subsets scored on it.

    ``subsets`` maps a metric-key name (``300w_common``) to a boolean mask (N,) over the pool's images.
    """

    split: str
    dataset: CropDataset
    subsets: dict[str, np.ndarray]


def select_subset(split: CachedSplit, spec: SubsetSpec, source: str = "") -> np.ndarray:
    """0-based positions of ``split`` that subset ``spec`` keeps (``where`` filters, then ``indices``)."""
    keep = np.ones(len(split), dtype=bool)
    for attr, values in (spec.where or {}).items():
        found = [a.get(attr) for a in split.attributes]
        if all(v is None for v in found):
            known = sorted({k for a in split.attributes for k in a})
            raise ValueError(
                f"{source}test.{spec.name}: no face of split {spec.split!r} has the attribute {attr!r} "
                f"(its faces have {known})"
            )
        allowed = {str(v) for v in values}
        keep &= np.array([str(v) in allowed for v in found], dtype=bool)
    positions = np.flatnonzero(keep)
    if spec.indices is not None:
        bad = [i for i in spec.indices if i >= len(split)]
        if bad:
            raise ValueError(
                f"{source}test.{spec.name}: indices {bad[:5]} beyond the split's {len(split)} faces"
            )
        positions = np.array([i for i in spec.indices if keep[i]], dtype=np.int64)
    return positions


class LandmarkDataModule(L.LightningDataModule):
    """Train / validation / test / unlabeled data described by a dataset YAML (``meta``).

    Args:
        meta: built-in dataset name ('300w', 'wflw', 'cofw', 'aflw', '300w_celeba', 'synthetic', ...) or a
            path to a dataset YAML.
        root: the data folder holding each download under its usual name (``300W/``, ``WFLW/``, ...).
        cache_dir: where crops are cached (``<cache_dir>/<meta name>/<split>_<size>px/``).
        input_size: side of the square network input, in pixels.
        batch_size, eval_batch_size, num_workers, pin_memory: the loaders.
        prefetch_factor: batches each loader worker prepares ahead (None: PyTorch's default, 2).
        crop_scale: overrides the ``scale`` of every split that sets one (e.g. 1.3 for 300W).
        eval_subsets: test subsets to evaluate (default: all the YAML names).
        augment: keyword arguments for ``build_train_transform`` (probabilities, ranges).
        sources: download folder (relative to ``root``: the ``dir`` of the YAML's splits, e.g. ``synthetic``)
            -> `PreparedSource` that ``prepare_data`` runs on ``root / folder`` before reading the splits
            stored there (only folders this run reads). In a Hydra config each is a ``_target_`` entry, e.g.
            ``sources: {synthetic: {_target_: pipnet_lit.synthetic.SyntheticFaces, n_train: 1500, ...}}``.
        load_train: prepare and load the training splits (and the mean face). Evaluating a checkpoint sets
            this to False: it needs only the test splits.
        load_unlabeled: prepare and load the unlabeled pool (default: when the YAML defines one).
        val_fraction: hold out this fraction of the training faces (seeded by ``val_seed``) as a validation
            split ``<name>_val``; 0 (default) validates on the test subsets, the official protocol.
        bad_input: ``{"train": "skip" | "raise", "eval": "skip" | "raise"}``: what to do with a malformed
            annotation or unreadable image (skip with a counted warning, or fail naming the file).
        prepare_workers: threads that crop in ``prepare_data`` (default: every core).
        split_overrides: reader arguments replacing the YAML's, per split, e.g. ``{"train": {"split_point":
            100}}`` (AFLW on a smaller file) or ``{"test": {"folders": ["ibug"]}}``.
        pseudo_labels: self-training: ``{"folder": <pseudo-label folder>, "task": "std" | "cls2" | "cls3"}``
            (``datasets/pseudo_labels.py``): train on the labeled split plus the pool's pseudo-labeled
            faces, each carrying ``task`` (labeled faces ``std``); batches then hold a ``task`` tensor and
            the module picks the loss from it. None (default): the labeled split alone.
    """

    def __init__(
        self,
        meta: str = "synthetic",
        root: str = "data",
        cache_dir: str = "data/cache",
        input_size: int = 256,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        crop_scale: float | None = None,
        eval_subsets: list[str] | str | None = None,
        augment: dict[str, Any] | None = None,
        sources: Mapping[str, PreparedSource] | None = None,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        load_train: bool = True,
        load_unlabeled: bool | None = None,
        val_fraction: float = 0.0,
        val_seed: int = 0,
        bad_input: dict[str, str] | None = None,
        prepare_workers: int | None = None,
        split_overrides: dict[str, dict[str, Any]] | None = None,
        pseudo_labels: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        # plain Python containers (not Hydra's DictConfig) so checkpoints load with weights_only=True
        eval_subsets, augment, bad_input, split_overrides, pseudo_labels = (
            _plain(v) for v in (eval_subsets, augment, bad_input, split_overrides, pseudo_labels)
        )
        if isinstance(eval_subsets, str):
            eval_subsets = [eval_subsets]
        bad_input = {"train": "skip", "eval": "raise", **(bad_input or {})}
        # sources are objects, not hyperparameters (checkpoints load with weights_only=True); the run's
        # config.yaml records how they were built
        self.save_hyperparameters(logger=False, ignore=["sources"])
        self.meta: DatasetMeta = load_dataset_meta(str(meta))
        self.sources = self._check_sources(sources)
        self.root = Path(root)
        self.cache_dir = Path(cache_dir)
        unknown = sorted(set(eval_subsets or ()) - set(self.meta.test))
        if unknown:
            raise ValueError(
                f"data.eval_subsets names {unknown}, which dataset {self.meta.name!r} does not define; "
                f"choose from {sorted(self.meta.test)}"
            )
        unknown = sorted(set(split_overrides or {}) - set(self.meta.splits))
        if unknown:
            raise ValueError(
                f"data.split_overrides names {unknown}, which dataset {self.meta.name!r} does not define; "
                f"its splits: {sorted(self.meta.splits)}"
            )
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if load_train and not self.meta.train:
            raise ValueError(
                f"dataset {self.meta.name!r} has no training split (it is evaluation-only); train on another "
                "dataset, or evaluate with python -m pipnet_lit.eval"
            )
        self.eval_subsets = list(eval_subsets or self.meta.test)
        self.train_set: CropDataset | None = None
        self.val_set: CropDataset | None = None
        self.unlabeled_set: CropDataset | None = None
        self.eval_sets: dict[str, CropDataset] = {}
        self.eval_pools: list[EvalPool] = []
        self.meanface: np.ndarray | None = None
        self._pseudo: tuple[Path, str] | None = None
        if pseudo_labels is not None:
            unknown = sorted(set(pseudo_labels) - {"folder", "task"})
            if unknown or "folder" not in pseudo_labels:
                raise ValueError(
                    f"data.pseudo_labels takes {{folder: <pseudo-label folder>, task: std|cls2|cls3}}, got "
                    f"{pseudo_labels}"
                )
            task = str(pseudo_labels.get("task", "std"))
            if task not in TASKS:
                raise ValueError(f"data.pseudo_labels.task must be one of {TASKS}, got {task!r}")
            if not self.meta.unlabeled:
                raise ValueError(f"data.pseudo_labels: dataset {self.meta.name!r} has no unlabeled pool")
            self._pseudo = (Path(pseudo_labels["folder"]), task)

    # -- facts other components read ---------------------------------------------------------------
    @property
    def num_landmarks(self) -> int:
        return self.meta.landmarks.num_landmarks

    @property
    def eval_subset_names(self) -> list[str]:
        """Metric-key names of the test subsets, e.g. '300w_common'."""
        return [f"{self.meta.name}_{s}" for s in self.eval_subsets]

    @property
    def val_subset_names(self) -> list[str]:
        """Metric-key names scored during validation: the held-out split, or the test subsets."""
        return [f"{self.meta.name}_val"] if self._uses_val_split else self.eval_subset_names

    @property
    def _uses_val_split(self) -> bool:
        return float(self.hparams.val_fraction) > 0 and bool(self.hparams.load_train)

    def _check_sources(self, sources: Mapping[str, Any] | None) -> dict[str, PreparedSource]:
        folders = sorted({spec.dir for spec in self.meta.splits.values()})
        checked = {}
        for folder, source in dict(sources or {}).items():
            if source is None:  # a config may switch a source off with `data.sources.<folder>=null`
                continue
            if str(folder) not in folders:
                raise ValueError(
                    f"data.sources.{folder}: dataset {self.meta.name!r} reads no folder {folder!r}; its "
                    f"splits live in {folders} (under data.root)"
                )
            if not isinstance(source, PreparedSource):
                raise TypeError(
                    f"data.sources.{folder} must have a prepare(folder) method (e.g. a _target_ such as "
                    f"pipnet_lit.synthetic.SyntheticFaces), got {type(source).__name__}"
                )
            checked[str(folder)] = source
        return checked

    def _use_unlabeled(self) -> bool:
        flag = self.hparams.load_unlabeled
        return bool(self.meta.unlabeled) if flag is None else bool(flag)

    def _needed_splits(self) -> dict[str, str]:
        """split name -> role ('train', 'eval' or 'unlabeled') of every split this run reads."""
        needed: dict[str, str] = {}
        if self.hparams.load_train:
            needed.update({s: "train" for s in self.meta.train})
        for subset in self.eval_subsets:
            needed.setdefault(self.meta.test[subset].split, "eval")
        if self._use_unlabeled():
            if not self.meta.unlabeled:
                raise ValueError(
                    f"data.load_unlabeled=true, but dataset {self.meta.name!r} has no unlabeled split"
                )
            for s in self.meta.unlabeled:
                needed.setdefault(s, "unlabeled")
        return needed

    def _split_args(self, split: str) -> dict[str, Any]:
        args = {**self.meta.splits[split].args, **(self.hparams.split_overrides or {}).get(split, {})}
        if self.hparams.crop_scale is not None and "scale" in args:
            args["scale"] = float(self.hparams.crop_scale)
        return args

    def split_cache_dir(self, split: str) -> Path:
        return self.cache_dir / self.meta.name / f"{split}_{self.hparams.input_size}px"

    def _bad_input(self, role: str, split: str) -> BadInput:
        mode = self.hparams.bad_input["eval" if role == "eval" else "train"]
        return BadInput(mode, what=f"{self.meta.name}/{split} ({'eval' if role == 'eval' else 'train'})")

    def _missing_download(self, split: str, err: Exception) -> FileNotFoundError:
        spec = self.meta.splits[split]
        where = self.root / spec.dir
        lines = [
            f"dataset {self.meta.name!r} (split {split!r}): {err}",
            f"  looked in: {where} (data.root={self.root}, folder {spec.dir!r})",
        ]
        if self.meta.layout:
            lines.append(f"  expected layout: {self.meta.layout}")
        if self.meta.download:
            lines.append(f"  get it from: {self.meta.download}")
        lines.append(
            "  or set data.root=/path/to/your/data (the folder holding each download by its usual name)"
        )
        return MissingDownloadError("\n".join(lines))

    # -- checkpointed state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data: the training augmentation's generator states, so a resumed
        run draws what an uninterrupted one would (with ``num_workers > 0`` the workers re-derive theirs
        from the torch seed, which `pipnet_lit.callbacks.ResumableRandomState` restores)."""
        transform = getattr(self.train_set, "transform", None)
        if transform is None or not hasattr(transform, "random_state"):
            return {}
        return {"train_transform": transform.random_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        transform = getattr(self.train_set, "transform", None)
        if state_dict.get("train_transform") is not None and hasattr(transform, "load_random_state"):
            transform.load_random_state(state_dict["train_transform"])

    # -- Lightning hooks ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Prepare the sources of the folders this run reads (``sources``), then read and crop every split
        this run needs (cached).

        Jobs sharing ``cache_dir`` run this one at a time (a lock file there), so parallel jobs on a fresh
        data folder do not render or crop the same files at once."""
        with exclusive_lock(self.cache_dir / ".prepare.lock", what=f"{self.meta.name} in {self.cache_dir}"):
            self._prepare_data()

    def _prepare_data(self) -> None:
        folders = {self.meta.splits[s].dir for s in self._needed_splits()}
        for folder in sorted(folders & set(self.sources)):
            self.sources[folder].prepare(self.root / folder)
        for split, role in self._needed_splits().items():
            spec = self.meta.splits[split]
            bad = self._bad_input(role, split)
            try:
                records = read_records(spec.format, self.root / spec.dir, bad=bad, **self._split_args(split))
            except MissingDownloadError as err:
                raise self._missing_download(split, err) from None
            if not records:
                raise ValueError(
                    f"dataset {self.meta.name!r}, split {split!r}: no faces found under "
                    f"{self.root / spec.dir}"
                )
            prepare_split(
                records,
                self.split_cache_dir(split),
                self.hparams.input_size,
                bad=bad,
                description=f"{self.meta.name}/{split}",
                params={
                    "meta": self.meta.name,
                    "split": split,
                    "format": spec.format,
                    **self._split_args(split),
                },
                workers=self.hparams.prepare_workers,
            )
            bad.warn_summary()

    def _read(self, split: str) -> CachedSplit:
        cached = read_split(self.split_cache_dir(split))
        if cached.landmarks is not None and len(cached) and cached.landmarks.shape[1] != self.num_landmarks:
            raise ValueError(
                f"{cached.cache_dir}: {cached.landmarks.shape[1]} landmarks per face, but dataset "
                f"{self.meta.name!r} uses scheme {self.meta.landmarks.name!r} with {self.num_landmarks}"
            )
        return cached

    def _read_many(self, splits: tuple[str, ...]) -> CachedSplit:
        parts = [self._read(s) for s in splits]
        if len(parts) == 1:
            return parts[0]
        landmarks = (
            None if any(p.landmarks is None for p in parts) else np.concatenate([p.landmarks for p in parts])
        )
        return CachedSplit(
            parts[0].cache_dir,
            [n for p in parts for n in p.names],
            [q for p in parts for q in p.image_paths],
            landmarks,
            np.concatenate([p.boxes for p in parts]),
            [a for p in parts for a in p.attributes],
        )

    def setup_unlabeled(self) -> CropDataset:
        """Load the unlabeled pool (after ``prepare_data``) without the rest: what pseudo-labelling needs."""
        if self.unlabeled_set is None:
            if not self.meta.unlabeled:
                raise ValueError(f"dataset {self.meta.name!r} defines no unlabeled split")
            pool = self._read_many(self.meta.unlabeled)
            pool.landmarks = None  # an unlabeled pool's annotations (if any) are never used
            self.unlabeled_set = _dataset(pool, build_eval_transform(self.hparams.input_size))
        return self.unlabeled_set

    def unlabeled_truth(self) -> np.ndarray | None:
        """The pool's own landmarks (N, L, 2), normalized, in ``unlabeled_set`` order, when its format
        carries them (the synthetic wild pool, a pool read from a labeled format); None otherwise (CelebA).

        For pseudo-label diagnostics only: training and filtering never see them."""
        pool = self._read_many(self.meta.unlabeled)
        if pool.landmarks is None or not len(pool) or pool.landmarks.shape[1] != self.num_landmarks:
            return None
        return pool.landmarks

    def unlabeled_fingerprint(self) -> str:
        """sha256 over the pool's crops (each split's cache identity and crop names): pseudo-labels made
        for another pool are never reused."""
        import hashlib

        from pipnet_lit.datasets.cache import read_manifest

        digest = hashlib.sha256()
        for split in self.meta.unlabeled:
            folder = self.split_cache_dir(split)
            manifest = read_manifest(folder / "manifest.json") or {}
            digest.update(
                f"{split}:{manifest.get('source_fingerprint')}:{manifest.get('input_size')}\n".encode()
            )
            digest.update("\n".join(read_split(folder).names).encode())
        return digest.hexdigest()

    def _with_pseudo_labels(self, train: CachedSplit) -> tuple[CachedSplit, np.ndarray]:
        """The labeled split followed by the pseudo-labeled pool faces, and each face's task id."""
        tasks = np.zeros(len(train), dtype=np.int64)
        if self._pseudo is None:
            return train, tasks
        from pipnet_lit.datasets.pseudo_labels import read_pseudo_labels

        folder, task = self._pseudo
        labels = read_pseudo_labels(folder)
        pool = self._read_many(self.meta.unlabeled)
        position = {n: i for i, n in enumerate(pool.names)}
        missing = [n for n in labels.names if n not in position]
        if missing:
            raise ValueError(
                f"{folder}: pseudo-labels for {len(missing)} face(s) not in the unlabeled pool of "
                f"{self.meta.name!r} (e.g. {missing[0]}); delete the folder to regenerate it"
            )
        picked = pool.select([position[n] for n in labels.names])
        if len(labels.names) and labels.landmarks.shape[1] != self.num_landmarks:
            raise ValueError(
                f"{folder}: {labels.landmarks.shape[1]} landmarks, the dataset has {self.num_landmarks}"
            )
        picked.landmarks = labels.landmarks.reshape(len(labels.names), self.num_landmarks, 2)
        both = CachedSplit(
            train.cache_dir,
            train.names + picked.names,
            train.image_paths + picked.image_paths,
            np.concatenate([train.landmarks, picked.landmarks]),
            np.concatenate([train.boxes, picked.boxes]),
            train.attributes + picked.attributes,
        )
        tasks = np.concatenate([tasks, np.full(len(picked), TASKS.index(task), dtype=np.int64)])
        return both, tasks

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        eval_transform = build_eval_transform(hp.input_size)
        if hp.load_train and self.train_set is None:
            train = self._read_many(self.meta.train)
            if train.landmarks is None or not len(train):
                raise ValueError(f"dataset {self.meta.name!r}: the training split holds no labeled faces")
            if self._uses_val_split:
                order = np.random.default_rng(hp.val_seed).permutation(len(train))
                n_val = max(1, int(round(hp.val_fraction * len(train))))
                val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
                self.val_set = _dataset(train.select(val_idx), eval_transform)
                train = train.select(train_idx)
            # float64, as the official gen_meanface; from the labeled faces only (never pseudo-labels)
            self.meanface = compute_meanface(train.landmarks)
            transform = build_train_transform(
                hp.input_size, self.meta.landmarks.flip_permutation, **(hp.augment or {})
            )
            # distinct augmentation streams per DDP rank (workers re-derive theirs in _seed_worker)
            transform.set_seed(random.randrange(2**31) + 1_000_003 * _rank())
            train, tasks = self._with_pseudo_labels(train)
            self.train_set = _dataset(train, transform, tasks if self._pseudo is not None else None)
        if not self.eval_pools:
            by_split: dict[str, list[str]] = {}
            for subset in self.eval_subsets:
                by_split.setdefault(self.meta.test[subset].split, []).append(subset)
            for split, subsets in by_split.items():
                cached = self._read(split)
                if cached.landmarks is None:
                    raise ValueError(f"dataset {self.meta.name!r}: test split {split!r} has no landmarks")
                pool = _dataset(cached, eval_transform)
                masks = {}
                for subset in subsets:
                    positions = select_subset(cached, self.meta.test[subset], f"{self.meta.path}: ")
                    key = f"{self.meta.name}_{subset}"
                    mask = np.zeros(len(cached), dtype=bool)
                    mask[positions] = True
                    masks[key] = mask
                    self.eval_sets[key] = _dataset(cached.select(positions), eval_transform)
                self.eval_pools.append(EvalPool(split, pool, masks))
            # keep eval_sets in the YAML's (or eval_subsets') order
            self.eval_sets = {k: self.eval_sets[k] for k in self.eval_subset_names}
        if self._use_unlabeled():
            self.setup_unlabeled()

    # -- the evaluation plan (what the module scores on each loader) -------------------------------
    def evaluation_plan(self, stage: str) -> EvalPlan:
        """What ``stage`` ('val' / 'test' / 'predict') evaluates, loader by loader (after ``setup``): each
        loader's image names and subset masks, the dataset's metrics (the first is the primary one) and the
        landmark count. Validation uses the held-out split when ``val_fraction`` > 0, else the test pools."""
        if stage not in ("val", "test", "predict"):
            raise ValueError(f"evaluation_plan: stage must be 'val', 'test' or 'predict', got {stage!r}")
        if stage == "val" and self._uses_val_split:
            if self.val_set is None:
                raise RuntimeError("evaluation_plan('val'): call setup() first (it holds out the split)")
            names = tuple(self.val_set.names)
            loaders = (LoaderPlan(names, {f"{self.meta.name}_val": np.ones(len(names), dtype=bool)}),)
        else:
            loaders = tuple(LoaderPlan(tuple(p.dataset.names), dict(p.subsets)) for p in self.eval_pools)
        return EvalPlan(self.num_landmarks, tuple(self.meta.metrics), loaders)

    def _loader(self, dataset: CropDataset, shuffle: bool, batch_size: int) -> DataLoader:
        workers = self.hparams.num_workers
        sampler = None
        trainer = getattr(self, "trainer", None)
        if not shuffle and trainer is not None and trainer.world_size > 1:
            # each image exactly once over all ranks (the default sampler pads by repeating images,
            # which would bias NME/FR/AUC); Lightning keeps a DistributedSampler it is given
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.hparams.pin_memory,
            prefetch_factor=self.hparams.get("prefetch_factor") if workers > 0 else None,
            drop_last=shuffle and len(dataset) > batch_size,
            worker_init_fn=_seed_worker,
            multiprocessing_context=_worker_start_method() if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("this datamodule was built with load_train=False: it has no training data")
        return self._loader(self.train_set, shuffle=True, batch_size=self.hparams.batch_size)

    def _eval_size(self) -> int:
        return self.hparams.eval_batch_size or self.hparams.batch_size

    def _pool_loaders(self) -> list[DataLoader]:
        return [self._loader(p.dataset, shuffle=False, batch_size=self._eval_size()) for p in self.eval_pools]

    def val_dataloader(self) -> list[DataLoader]:
        if self._uses_val_split:
            return [self._loader(self.val_set, shuffle=False, batch_size=self._eval_size())]
        return self._pool_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._pool_loaders()

    def predict_dataloader(self) -> list[DataLoader]:
        return self._pool_loaders()

    def unlabeled_dataloader(self) -> DataLoader:
        if self.unlabeled_set is None:
            raise RuntimeError(f"dataset {self.meta.name!r} was set up without an unlabeled pool")
        return self._loader(self.unlabeled_set, shuffle=False, batch_size=self._eval_size())


def _dataset(split: CachedSplit, transform: Any, tasks: np.ndarray | None = None) -> CropDataset:
    return CropDataset(
        split.image_paths, split.landmarks, split.boxes, transform, names=split.names, tasks=tasks
    )


def _worker_start_method() -> str | None:
    """How loader workers start: None (PyTorch's default) unless the process set a start method of its own;
    inside a joblib launcher's (loky) worker, whose own default context cannot start them ('Process' object
    has no attribute 'env'), the platform's standard method by name."""
    import multiprocessing

    method = multiprocessing.get_start_method(allow_none=True)
    available = multiprocessing.get_all_start_methods()
    if method is None or method in available:
        return method
    return "fork" if "fork" in available else "spawn"


def _rank() -> int:
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _seed_worker(worker_id: int) -> None:
    """Give each loader worker (of each DDP rank) its own reproducible augmentation stream."""
    seed = (torch.initial_seed() + 1_000_003 * _rank()) % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if hasattr(transform, "set_seed"):
        transform.set_seed(seed)
