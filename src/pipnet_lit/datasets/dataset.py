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
    of the crop, `box` (4,) float32 `[x_min, y_min, w, h]` of the crop in the source image's pixels (the
    same convention as its annotation file), and `index`.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        landmarks: np.ndarray,
        boxes: np.ndarray,
        transform: LandmarkTransformFn,
        names: Sequence[str] | None = None,
    ) -> None:
        if len(image_paths) != len(landmarks) or len(image_paths) != len(boxes):
            raise ValueError(
                f"{len(image_paths)} images, {len(landmarks)} landmark sets and {len(boxes)} boxes: "
                "the counts must agree"
            )
        self.image_paths = [Path(p) for p in image_paths]
        self.landmarks = np.asarray(landmarks, dtype=np.float32)  # (N, L, 2)
        self.boxes = np.asarray(boxes, dtype=np.float32)  # (N, 4)
        self.transform = transform
        self.names = list(names) if names is not None else [p.name for p in self.image_paths]

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        path = self.image_paths[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read cached crop {path}; delete the cache folder to rebuild it")
        tensor, landmarks = self.transform(image, self.landmarks[index])
        return {
            "image": tensor,
            "landmarks": torch.as_tensor(landmarks, dtype=torch.float32),
            "box": torch.from_numpy(self.boxes[index]),
            "index": index,
        }
