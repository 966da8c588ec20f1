"""Training augmentation and eval preprocessing for face crops with normalized landmarks.

Reproduces the official PIPNet augmentation (lib/data_utils.py, ImageFolder_pip.__getitem__), in order:
translate (p 0.5, integer shift, landmarks clipped to [0, 1]) -> occlusion (p 0.5, one-colour rectangle)
-> horizontal flip (p 0.5, landmarks permuted) -> rotate (p 0.5, +-30 deg about the crop centre) -> Gaussian
blur (p 0.3, sigma uniform in (0, 5)) -> grayscale (p 0.2) -> ImageNet normalization -> (3, H, W) float32.

Coordinates. Landmarks are `(L, 2)` normalized to the crop in continuous coordinates (0 = left edge of
the crop, 1 = right edge). albumentations 2.0.8 works in pixel-index coordinates (HorizontalFlip maps
x -> W - 1 - x; Rotate turns about ((W - 1) / 2, (H - 1) / 2)), so keypoints are handed to it as
`x * W - 0.5` and read back as `(x + 0.5) / W`; the official clip to [0, 1] becomes [-0.5, W - 0.5].

Custom albumentations steps, where no built-in transform matches the official step exactly:
`OfficialTranslate` (official integer-shift distribution, clip after shift), `OfficialOcclusion`
(official rectangle-size/place/colour distribution), `PermutedHorizontalFlip` (permutes the keypoint rows
exactly when the flip is applied; 2.0.8's KeypointParams has no `label_mapping`) and `PilGaussianBlur`
(GaussianBlur that treats sigma == 0 as PIL's no-op instead of dividing by zero).
For speed only, `NormalizeToTensor` does A.Normalize + ToTensorV2 in one step (the same values, written
channel-first).

Randomness. albumentations 2.0.8 ignores the global `random`/`numpy.random` state: every transform draws
from its own `py_random` (`random.Random`, used for all p-checks and, here, every parameter) and
`random_generator` (`np.random.Generator`). `Compose(seed=s)` seeds every transform with the *same* s, so
steps replay one stream (flip and grayscale, one draw each per call, would agree every time: grayscale only
on flipped samples); `LandmarkTransform` therefore hands one shared pair of generators to the whole
pipeline (`Compose.set_random_state`). `LandmarkTransform(seed=...)`/`set_seed` make a run reproducible
(seed None: drawn once from the global `random`). Inside a DataLoader worker the generators are re-derived
on first use from the worker's torch seed (plus `seed` if given) unless `set_seed` was called in that
worker, so workers never replay each other's (or the previous epoch's) augmentations.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.core.type_definitions import Targets
from albumentations.pytorch import ToTensorV2
from torch.utils import data as torch_data

from pipnet_lit.models.backbones import IMAGENET_MEAN, IMAGENET_STD  # one source for the constants
from pipnet_lit.random_state import python_state_from_plain, python_state_to_plain


def validate_flip_permutation(flip_permutation: Sequence[int] | np.ndarray) -> np.ndarray:
    """Check a 0-based flip permutation `(L,)` and return it as int64.

    Entry k names the original landmark that becomes landmark k after a horizontal flip. It must be a
    permutation of 0..L-1 that is its own inverse (mirror partners swap, midline points map to themselves).
    """
    try:
        raw = np.asarray(flip_permutation)
    except Exception as exc:  # ragged nested lists and the like
        raise ValueError(f"flip_permutation must be a 1-D list of ints, got {flip_permutation!r}") from exc
    if raw.ndim != 1 or raw.size == 0:
        raise ValueError(f"flip_permutation must be a non-empty 1-D list of ints, got shape {raw.shape}")
    if raw.dtype.kind not in "iuf" or raw.dtype == np.bool_:
        raise ValueError(f"flip_permutation must contain integers, got dtype {raw.dtype}")
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
        raise ValueError("flip_permutation must contain integers, got non-integral values")
    perm = raw.astype(np.int64)
    n = perm.size
    counts = np.bincount(perm[(perm >= 0) & (perm < n)], minlength=n)
    if perm.min() < 0 or perm.max() >= n or np.any(counts != 1):
        hint = " (it looks 1-based: subtract 1)" if perm.min() == 1 and perm.max() == n else ""
        missing = np.flatnonzero(counts == 0).tolist()
        repeated = np.flatnonzero(counts > 1).tolist()
        raise ValueError(
            f"flip_permutation is not a permutation of 0..{n - 1}{hint}: values outside the range "
            f"{perm[(perm < 0) | (perm >= n)].tolist()}, missing {missing}, repeated {repeated}"
        )
    bad = np.flatnonzero(perm[perm] != np.arange(n))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"flip_permutation is not an involution (applying it twice must give the identity): "
            f"{i} -> {perm[i]} -> {perm[perm[i]]} (bad indices {bad.tolist()}); each landmark must map to "
            f"its mirror partner, which maps back to it, or to itself"
        )
    return perm


class OfficialTranslate(A.DualTransform):
    """Official PIPNet translate: integer shift, black fill, keypoints shifted then clipped to the crop.

    Per axis c = int((u - 0.5) * 2 * max_px), u ~ U[0, 1) (official: int((random() - 0.5) * 60)), so c is in
    [-(max_px - 1), max_px - 1] and 0 is twice as likely as any other value. Image content moves by -c; the
    keypoints (pixel-index coordinates, `(N, 2+)`) move by -c and are clipped to [-0.5, size - 0.5], i.e. to
    [0, 1] in continuous normalized coordinates.
    """

    _targets = (Targets.IMAGE, Targets.KEYPOINTS)

    def __init__(self, max_px: int = 30, p: float = 0.5):
        super().__init__(p=p)
        self.max_px = int(max_px)

    def get_params(self) -> dict[str, int]:
        dx = int((self.py_random.random() - 0.5) * 2 * self.max_px)
        dy = int((self.py_random.random() - 0.5) * 2 * self.max_px)
        return {"dx": dx, "dy": dy}

    def apply(self, img: np.ndarray, dx: int = 0, dy: int = 0, **params: Any) -> np.ndarray:
        h, w = img.shape[:2]
        out = np.zeros_like(img)
        cw, ch = w - abs(dx), h - abs(dy)
        if cw > 0 and ch > 0:
            sx, sy, tx, ty = max(dx, 0), max(dy, 0), max(-dx, 0), max(-dy, 0)
            out[ty : ty + ch, tx : tx + cw] = img[sy : sy + ch, sx : sx + cw]
        return out

    def apply_to_keypoints(
        self, keypoints: np.ndarray, dx: int = 0, dy: int = 0, **params: Any
    ) -> np.ndarray:
        h, w = params["shape"][:2]
        out = keypoints.copy()
        out[:, 0] = np.clip(out[:, 0] - dx, -0.5, w - 0.5)
        out[:, 1] = np.clip(out[:, 1] - dy, -0.5, h - 0.5)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_px",)


class OfficialOcclusion(A.ImageOnlyTransform):
    """Official PIPNet occlusion: one rectangle filled with one random colour; keypoints untouched.

    h = int(H * max_frac * u1), w = int(W * max_frac * u2), x0 = int((W - w - 10) * u3),
    y0 = int((H - h - 10) * u4) (clamped at 0 for crops under ~17 px), then three colour values
    int(u * 255) drawn in the official B, G, R order and written into this RGB image accordingly.
    """

    def __init__(self, max_frac: float = 0.4, p: float = 0.5):
        super().__init__(p=p)
        self.max_frac = float(max_frac)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h_img, w_img = params["shape"][:2]
        r = self.py_random.random
        h = int(h_img * self.max_frac * r())
        w = int(w_img * self.max_frac * r())
        x0 = max(0, int((w_img - w - 10) * r()))
        y0 = max(0, int((h_img - h - 10) * r()))
        bgr = [int(r() * 255) for _ in range(3)]
        return {"box": (x0, y0, w, h), "color": np.array(bgr[::-1], dtype=np.uint8)}

    def apply(
        self, img: np.ndarray, box: tuple[int, int, int, int] = (0, 0, 0, 0), **params: Any
    ) -> np.ndarray:
        x0, y0, w, h = box
        out = img.copy()
        out[y0 : y0 + h, x0 : x0 + w] = params["color"]
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_frac",)


class PermutedHorizontalFlip(A.HorizontalFlip):
    """HorizontalFlip that also reorders the keypoints `(L, 2+)`: row k becomes old row `permutation[k]`.

    The reorder runs inside `apply_to_keypoints`, so it happens exactly when the flip is applied.
    """

    def __init__(self, permutation: Sequence[int] | np.ndarray, p: float = 0.5):
        super().__init__(p=p)
        self._index = validate_flip_permutation(permutation)
        self.permutation = self._index.tolist()

    def apply_to_keypoints(self, keypoints: np.ndarray, **params: Any) -> np.ndarray:
        if len(keypoints) != len(self._index):
            raise ValueError(
                f"PermutedHorizontalFlip: {len(keypoints)} keypoints, but the flip permutation has "
                f"{len(self._index)} entries"
            )
        return super().apply_to_keypoints(keypoints, **params)[self._index]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("permutation",)


class PilGaussianBlur(A.GaussianBlur):
    """GaussianBlur with sigma ~ U(sigma_limit) and PIL's kernel extent; sigma == 0 is a no-op (as in PIL)."""

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        sigma = self.py_random.uniform(*self.sigma_limit)
        if sigma <= 0.0:
            return {"kernel": np.ones(1, dtype=np.float64)}
        return {"kernel": A.augmentations.blur.functional.create_gaussian_kernel_1d(sigma, 0)}


class NormalizeToTensor(A.ImageOnlyTransform):
    """`A.Normalize` then `ToTensorV2` in one step: (H, W, C) uint8 -> contiguous (C, H, W) float32 tensor.

    The values are A.Normalize's own: its per-channel lookup tables, read once from a 0..255 ramp, are applied
    to each channel plane and written channel-first, so no interleaved float image is built and then
    transposed (ToTensorV2's tensor is a non-contiguous view, which also made collating slower). Non-uint8
    input falls back to the two steps.
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        max_pixel_value: float = 255.0,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.mean, self.std, self.max_pixel_value = tuple(mean), tuple(std), float(max_pixel_value)
        self._normalize = A.Normalize(mean=self.mean, std=self.std, max_pixel_value=self.max_pixel_value)
        ramp = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], len(self.mean), axis=2)
        table = self._normalize(image=ramp)["image"]  # (256, 1, C): entry v of channel c is v's output
        self._tables = [np.ascontiguousarray(table[:, 0, c]) for c in range(table.shape[2])]

    def apply(self, img: np.ndarray, **params: Any) -> torch.Tensor:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != len(self._tables):
            return ToTensorV2().apply(self._normalize.apply(img))
        out = np.empty((img.shape[2], *img.shape[:2]), dtype=self._tables[0].dtype)
        for c, plane in enumerate(cv2.split(img)):
            result = cv2.LUT(plane, self._tables[c], dst=out[c])
            if not np.shares_memory(result, out):  # OpenCV allocated instead of writing in place
                out[c] = result
        return torch.from_numpy(out)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mean", "std", "max_pixel_value")


def _worker_key() -> tuple[int, int] | None:
    info = torch_data.get_worker_info()
    return None if info is None else (int(info.id), int(info.seed))


class LandmarkTransform:
    """Callable `(image_bgr (H, W, 3) uint8, landmarks (L, 2)) -> (image (3, S, S) float32, (L, 2) float32)`.

    Landmarks are normalized continuous crop coordinates in and out (float32 out). `compose` must take
    `image=` RGB uint8 and, if `moves_landmarks`, `keypoints=` in pixel-index coordinates (format "xy",
    remove_invisible=False); it must end with a (3, S, S) float32 tensor. With `resize_input` the image is
    first resized to `input_size` (cv2 bilinear; normalized landmarks are unchanged by a resize), otherwise
    it must already be `input_size` x `input_size`.
    """

    def __init__(
        self,
        compose: A.Compose,
        input_size: int,
        *,
        num_landmarks: int | None = None,
        moves_landmarks: bool = True,
        resize_input: bool = False,
        seed: int | None = None,
        reseed_in_workers: bool = True,
    ):
        self.compose = compose
        self.input_size = _check_size(input_size)
        self.num_landmarks = num_landmarks
        self.moves_landmarks = moves_landmarks
        self.resize_input = resize_input
        self.reseed_in_workers = reseed_in_workers
        self.set_seed(seed)
        self._rng_key = None  # only an explicit set_seed pins a worker's stream

    def set_seed(self, seed: int | None) -> None:
        """Reseed the pipeline's shared generators; pins the stream of the current DataLoader worker.

        None draws the seed from Python's global `random` (so `random.seed`/`seed_everything` before this
        call makes it reproducible); it is not stored, so workers derive theirs from the worker seed alone.
        """
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._seed_generators(random.getrandbits(128) if seed is None else self.seed)
        self._rng_key = _worker_key()

    def random_state(self) -> dict[str, Any]:
        """The pipeline's generator states as plain Python values (saved in checkpoints, so a resumed run
        draws the augmentation an uninterrupted run would have drawn)."""
        return {
            "numpy": self.compose.random_generator.bit_generator.state,
            "python": python_state_to_plain(self.compose.py_random.getstate()),
        }

    def load_random_state(self, state: dict[str, Any]) -> None:
        """Restore `random_state` (every transform of the pipeline shares the two generators)."""
        rng = np.random.default_rng()
        rng.bit_generator.state = state["numpy"]
        py = random.Random()
        py.setstate(python_state_from_plain(state["python"]))
        self.compose.set_random_state(rng, py)

    def _seed_generators(self, entropy: int | list[int] | None) -> None:
        seq = np.random.SeedSequence(entropy)
        np_seq, py_seq = seq.spawn(2)
        py_seed = int.from_bytes(py_seq.generate_state(2, np.uint64).tobytes(), "little")
        self.compose.set_random_state(np.random.default_rng(np_seq), random.Random(py_seed))

    def _check_inputs(self, image: Any, landmarks: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(image, np.ndarray):
            raise ValueError(f"image must be a numpy array (H, W, 3) uint8 BGR, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must have shape (H, W, 3) (BGR, as read by cv2), got {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8, got {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image is empty: shape {image.shape}")
        if not self.resize_input and image.shape[:2] != (self.input_size, self.input_size):
            raise ValueError(
                f"image must be a {self.input_size}x{self.input_size} crop (input_size), got "
                f"{image.shape[1]}x{image.shape[0]} (WxH); crop and resize it first"
            )
        try:
            lms = np.asarray(landmarks, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"landmarks must be a numeric (L, 2) array, got {type(landmarks).__name__}"
            ) from exc
        if lms.ndim != 2 or lms.shape[1] != 2:
            raise ValueError(f"landmarks must have shape (L, 2), got {lms.shape}")
        if self.num_landmarks is not None and lms.shape[0] != self.num_landmarks:
            raise ValueError(
                f"got {lms.shape[0]} landmarks, but this transform's flip permutation is for "
                f"{self.num_landmarks}; check the dataset's landmark scheme"
            )
        if not np.all(np.isfinite(lms)):
            raise ValueError(
                f"landmarks contain NaN/inf at rows {np.flatnonzero(~np.isfinite(lms).all(1)).tolist()}"
            )
        return image, lms

    def __call__(self, image_bgr: np.ndarray, landmarks: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        image, lms = self._check_inputs(image_bgr, landmarks)
        if self.reseed_in_workers:
            key = _worker_key()
            if key is not None and key != self._rng_key:
                self._seed_generators([key[1]] if self.seed is None else [key[1], self.seed])
                self._rng_key = key
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if self.resize_input and rgb.shape[:2] != (self.input_size, self.input_size):
            rgb = cv2.resize(rgb, (self.input_size, self.input_size), interpolation=cv2.INTER_LINEAR)
        if not self.moves_landmarks:
            return self.compose(image=rgb)["image"], lms.astype(np.float32)
        size = np.array([rgb.shape[1], rgb.shape[0]], dtype=np.float64)
        out = self.compose(image=rgb, keypoints=lms * size - 0.5)
        tensor = out["image"]
        kps = np.asarray(out["keypoints"], dtype=np.float64)[:, :2]
        out_size = np.array([tensor.shape[-1], tensor.shape[-2]], dtype=np.float64)
        if kps.shape[0] != lms.shape[0]:
            raise RuntimeError(f"augmentation returned {kps.shape[0]} landmarks for {lms.shape[0]} (a bug)")
        return tensor, ((kps + 0.5) / out_size).astype(np.float32)


def _check_size(input_size: Any) -> int:
    if not isinstance(input_size, (int, np.integer)) or isinstance(input_size, bool) or input_size <= 0:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    return int(input_size)


def _check_prob(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_nonneg(name: str, value: float) -> float:
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _final_steps(gray_p: float) -> list[A.BasicTransform]:
    return [
        A.ToGray(num_output_channels=3, method="weighted_average", p=gray_p),
        NormalizeToTensor(IMAGENET_MEAN, IMAGENET_STD, max_pixel_value=255.0),
    ]


def build_train_transform(
    input_size: int,
    flip_permutation: Sequence[int] | np.ndarray,
    *,
    translate_px: int = 30,
    translate_p: float = 0.5,
    occlusion_p: float = 0.5,
    occlusion_max: float = 0.4,
    flip_p: float = 0.5,
    rotate_deg: float = 30,
    rotate_p: float = 0.5,
    blur_p: float = 0.3,
    blur_max_sigma: float = 5.0,
    gray_p: float = 0.2,
    seed: int | None = None,
) -> LandmarkTransform:
    """The official PIPNet training augmentation for `input_size` crops (see the module docstring).

    `flip_permutation` is the dataset's 0-based flip map `(L,)`; calls must pass exactly L landmarks.
    Rotation uses nearest-neighbour sampling and black fill, like PIL's `Image.rotate` defaults.
    """
    size = _check_size(input_size)
    perm = validate_flip_permutation(flip_permutation)
    if not isinstance(translate_px, (int, np.integer)) or isinstance(translate_px, bool) or translate_px < 0:
        raise ValueError(f"translate_px must be an int >= 0, got {translate_px!r}")
    if not 0.0 <= occlusion_max <= 1.0:
        raise ValueError(f"occlusion_max must be a fraction in [0, 1], got {occlusion_max!r}")
    rotate_deg = _check_nonneg("rotate_deg", rotate_deg)
    blur_max_sigma = _check_nonneg("blur_max_sigma", blur_max_sigma)
    steps: list[A.BasicTransform] = [
        OfficialTranslate(max_px=int(translate_px), p=_check_prob("translate_p", translate_p)),
        OfficialOcclusion(max_frac=float(occlusion_max), p=_check_prob("occlusion_p", occlusion_p)),
        PermutedHorizontalFlip(perm, p=_check_prob("flip_p", flip_p)),
        A.Rotate(
            limit=(-rotate_deg, rotate_deg),
            interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            crop_border=False,
            p=_check_prob("rotate_p", rotate_p),
        ),
        PilGaussianBlur(blur_limit=0, sigma_limit=(0.0, blur_max_sigma), p=_check_prob("blur_p", blur_p)),
        *_final_steps(_check_prob("gray_p", gray_p)),
    ]
    compose = A.Compose(steps, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    return LandmarkTransform(compose, size, num_landmarks=len(perm), moves_landmarks=True, seed=seed)


def build_eval_transform(input_size: int) -> LandmarkTransform:
    """Eval preprocessing: resize to `input_size` if needed (bilinear), BGR -> RGB, ImageNet normalize.

    Landmarks are returned unchanged (as float32): normalized coordinates do not move under a resize.
    """
    size = _check_size(input_size)
    compose = A.Compose([NormalizeToTensor(IMAGENET_MEAN, IMAGENET_STD, max_pixel_value=255.0)])
    return LandmarkTransform(compose, size, moves_landmarks=False, resize_input=True)
