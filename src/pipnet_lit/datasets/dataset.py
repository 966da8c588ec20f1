"""A map-style dataset over cached face crops: image + normalized landmarks, augmented on the fly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

LandmarkTransformFn = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


class CropDataset(Dataset):
    """Face crops on disk with landmarks normalized to the crop.

    Each item is a dict: `image` (3, S, S) float32 normalized RGB, `landmarks` (L, 2) float32 in [0, 1]
    of the crop (absent when the set is unlabeled: `landmarks=None`), `box` (4,) float32 `[x0, y0, w, h]`:
    the crop's frame in the source image's pixels (pixels = landmarks * (w, h) + (x0, y0)), and `index`.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        landmarks: np.ndarray | None,
        boxes: np.ndarray,
        transform: LandmarkTransformFn,
        names: Sequence[str] | None = None,
        tasks: np.ndarray | None = None,
    ) -> None:
        n_lms = len(image_paths) if landmarks is None else len(landmarks)
        if len(image_paths) != n_lms or len(image_paths) != len(boxes):
            raise ValueError(
                f"{len(image_paths)} images, {n_lms} landmark sets and {len(boxes)} boxes: "
                "the counts must agree"
            )
        self.image_paths = [Path(p) for p in image_paths]
        # (N, L, 2) normalized to the crops, or None for an unlabeled set
        self.landmarks = None if landmarks is None else np.asarray(landmarks, dtype=np.float32)
        self.boxes = np.asarray(boxes, dtype=np.float32)  # (N, 4)
        self.transform = transform
        self.names = list(names) if names is not None else [p.name for p in self.image_paths]
        # self-training: the task id of each face (0 std, 1 cls2, 2 cls3), in each item as `task`
        self.tasks = None if tasks is None else np.asarray(tasks, dtype=np.int64)
        if self.tasks is not None and len(self.tasks) != len(self.image_paths):
            raise ValueError(f"{len(self.tasks)} tasks for {len(self.image_paths)} images")

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        path = self.image_paths[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read cached crop {path}; delete the cache folder to rebuild it")
        if self.landmarks is None:
            tensor, _ = self.transform(image, _NO_LANDMARKS)
            return {"image": tensor, "box": torch.from_numpy(self.boxes[index]), "index": index}
        tensor, landmarks = self.transform(image, self.landmarks[index])
        item = {
            "image": tensor,
            "landmarks": torch.as_tensor(landmarks, dtype=torch.float32),
            "box": torch.from_numpy(self.boxes[index]),
            "index": index,
        }
        if self.tasks is not None:
            item["task"] = int(self.tasks[index])
        return item


_NO_LANDMARKS = np.zeros((0, 2), dtype=np.float32)
