"""LightningDataModule for benchmarks stored in the 300W on-disk layout (folders of images + `.pts`).

`prepare_data` crops every folder once into a cache (official crop arithmetic, see `w300.py`);
`setup` builds the training set, one evaluation set per named test subset, and the mean face.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from pipnet_lit.datasets.dataset import CropDataset
from pipnet_lit.datasets.meta import DatasetMeta, load_dataset_meta
from pipnet_lit.datasets.transforms import build_eval_transform, build_train_transform
from pipnet_lit.datasets.w300 import load_prepared_split, prepare_300w_split
from pipnet_lit.pip import compute_meanface


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return (
        OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value
    )


def _folder_key(folder: str) -> str:
    return folder.strip("/").replace("/", "_")


class LandmarkDataModule(L.LightningDataModule):
    """Train / evaluation data for one benchmark described by a metadata file (`meta`).

    Args:
        meta: built-in dataset name ('300w', 'synthetic') or a path to a dataset YAML.
        root: the raw download (the folder holding afw/, helen/, ... for 300W).
        cache_dir: where the cropped, resized images and their annotations are cached.
        input_size: side of the square network input, in pixels.
        eval_subsets: test subsets to validate and test on (default: all subsets the metadata names).
        augment: keyword arguments for `build_train_transform` (probabilities, ranges).
        synthetic: if given, keyword arguments for `pipnet_lit.synthetic.generate_dataset`, run in
            `prepare_data` (a no-op when the data on disk already match).
        load_train: prepare and load the training folders (and the mean face). Evaluation of a trained
            checkpoint sets this to False: it needs only the test folders.
    """

    def __init__(
        self,
        meta: str = "synthetic",
        root: str = "data/synthetic",
        cache_dir: str = "data/cache/synthetic",
        input_size: int = 256,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        crop_scale: float | None = None,
        eval_subsets: list[str] | str | None = None,
        augment: dict[str, Any] | None = None,
        synthetic: dict[str, Any] | None = None,
        pin_memory: bool = False,
        load_train: bool = True,
    ) -> None:
        super().__init__()
        # plain Python containers (not Hydra's DictConfig) so checkpoints load with weights_only=True
        eval_subsets, augment, synthetic = (_plain(v) for v in (eval_subsets, augment, synthetic))
        if isinstance(eval_subsets, str):
            eval_subsets = [eval_subsets]
        self.save_hyperparameters(logger=False)
        self.meta: DatasetMeta = load_dataset_meta(meta)
        self.root = Path(root)
        self.cache_dir = Path(cache_dir)
        self.crop_scale = float(crop_scale if crop_scale is not None else self.meta.crop_scale)
        unknown = sorted(set(eval_subsets or ()) - set(self.meta.test_splits))
        if unknown:
            raise ValueError(
                f"data.eval_subsets names {unknown}, which dataset {self.meta.name!r} does not define; "
                f"choose from {sorted(self.meta.test_splits)}"
            )
        self.eval_subsets = list(eval_subsets or self.meta.test_splits)
        self.train_set: CropDataset | None = None
        self.eval_sets: dict[str, CropDataset] = {}
        self.meanface: np.ndarray | None = None

    # -- facts other components read ---------------------------------------------------------------
    @property
    def num_landmarks(self) -> int:
        return self.meta.landmarks.num_landmarks

    @property
    def eval_subset_names(self) -> list[str]:
        """Metric-key names of the evaluation subsets, e.g. 'synthetic_common'."""
        return [f"{self.meta.name}_{s}" for s in self.eval_subsets]

    def _folders(self) -> list[str]:
        folders = list(self.meta.train_folders) if self.hparams.load_train else []
        for subset in self.eval_subsets:
            folders += [f for f in self.meta.test_splits[subset] if f not in folders]
        return folders

    def _cache_for(self, folder: str) -> Path:
        return self.cache_dir / f"{self.hparams.input_size}px_s{self.crop_scale:g}" / _folder_key(folder)

    # -- Lightning hooks ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.hparams.synthetic is not None:
            from pipnet_lit.synthetic import generate_dataset

            generate_dataset(self.root, **self.hparams.synthetic)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset root {self.root} does not exist: download {self.meta.name} there or set "
                f"data.root=/path/to/it (expected sub-folders: {self._folders()})"
            )
        missing = [f for f in self._folders() if not (self.root / f).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{self.root} lacks the folder(s) {missing} that dataset {self.meta.name!r} reads "
                f"(its layout: {self._folders()}); check data.root"
            )
        for folder in self._folders():
            prepare_300w_split(
                self.root, [folder], self._cache_for(folder), self.hparams.input_size, scale=self.crop_scale
            )

    def _read(
        self, folders: tuple[str, ...] | list[str]
    ) -> tuple[list[Path], np.ndarray, np.ndarray, list[str]]:
        """Crop paths, landmarks (N, L, 2) float64, boxes (N, 4) and 'folder/crop' names of some folders."""
        scheme = self.meta.landmarks
        paths, landmarks, boxes, names = [], [], [], []
        for folder in folders:
            cache = self._cache_for(folder)
            p, lms, b, n = load_prepared_split(cache)
            if not p:
                continue
            if lms.shape[1] != scheme.num_landmarks:
                raise ValueError(
                    f"{cache}: {lms.shape[1]} landmarks per face, but dataset "
                    f"{self.meta.name!r} uses scheme {scheme.name!r} with {scheme.num_landmarks}"
                )
            paths += p
            landmarks.append(lms)
            boxes.append(b)
            names += [f"{folder}/{name}" for name in n]
        if not paths:
            raise ValueError(f"folders {list(folders)} under {self.root} hold no annotated images")
        return paths, np.concatenate(landmarks), np.concatenate(boxes), names

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.load_train and self.train_set is None:
            paths, landmarks, boxes, names = self._read(self.meta.train_folders)
            self.meanface = compute_meanface(landmarks)  # float64, as the official gen_meanface
            transform = build_train_transform(
                self.hparams.input_size, self.meta.landmarks.flip_permutation, **(self.hparams.augment or {})
            )
            # distinct augmentation streams per DDP rank (workers re-derive theirs in _seed_worker)
            transform.set_seed(random.randrange(2**31) + 1_000_003 * _rank())
            self.train_set = CropDataset(paths, landmarks, boxes, transform, names=names)
        if not self.eval_sets:
            transform = build_eval_transform(self.hparams.input_size)
            for name, subset in zip(self.eval_subset_names, self.eval_subsets, strict=True):
                paths, landmarks, boxes, names = self._read(self.meta.test_splits[subset])
                self.eval_sets[name] = CropDataset(paths, landmarks, boxes, transform, names=names)

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
            drop_last=shuffle and len(dataset) > batch_size,
            worker_init_fn=_seed_worker,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("this datamodule was built with load_train=False: it has no training data")
        return self._loader(self.train_set, shuffle=True, batch_size=self.hparams.batch_size)

    def _eval_loaders(self) -> list[DataLoader]:
        size = self.hparams.eval_batch_size or self.hparams.batch_size
        return [self._loader(ds, shuffle=False, batch_size=size) for ds in self.eval_sets.values()]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()


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
