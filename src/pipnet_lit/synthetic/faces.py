"""Synthetic face-like images with 68 iBUG landmarks, written in the 300W on-disk format.

Each face starts from a canonical 68-point template (iBUG order: jaw 0-16 from the image's left,
brows 17-21 / 22-26, nose bridge 27-30, nostrils 31-35, eyes 36-41 / 42-47, outer lips 48-59, inner
lips 60-67; "right" features are the subject's right, on the image's left). Random expression (mouth
open, smile, brow raise, partial blink), an approximate 3D pose (yaw on a rounded head: the far side is
compressed and the nose and mouth shift; small pitch; roll), scale and translation are applied, then
the face is drawn with OpenCV so that every visible feature sits exactly on its landmarks: the face
outline is the jaw polyline plus a forehead arc, brows are thick polylines, eyes are filled polygons
with an iris, the nose is drawn along 27-30 and 31-35, lips are filled polygons.

Coordinates: the renderer works in continuous pixel coordinates (0 = left/top edge of pixel 0; the
centre of pixel i is i + 0.5). The ``.pts`` files hold 1-based pixel coordinates as in 300W, i.e.
``pts = continuous + 0.5`` (the centre of pixel 0 is 1.0). The official 300W crop truncates ``.pts``
values with ``int()``, which on these files rounds the continuous coordinate: unbiased.

Images are written as PNG (lossless) by default; ``image_format="jpg"`` writes JPEG quality 95.
Every image is a pure function of ``(seed, split, index)`` and the generator version, so the same
arguments always give byte-identical files (adding images to one split does not change the others).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipnet_lit.datasets.cache import read_manifest, write_manifest
from pipnet_lit.datasets.pts import write_pts

__all__ = [
    "GENERATOR_VERSION",
    "SPLIT_STYLES",
    "STYLES",
    "FaceParams",
    "Occluder",
    "face_landmarks",
    "generate_dataset",
    "render_face",
    "sample_face_params",
    "template_68",
]

# Bump whenever rendering or sampling changes: generated datasets are then rebuilt.
# 2: the wild style keeps the clean pose and expression ranges (an imaging-conditions shift only).
GENERATOR_VERSION = 2
STYLES = ("clean", "challenge", "wild")
# Split folder -> rendering style; the folders mirror datasets/descriptions/synthetic.yaml.
SPLIT_STYLES = {
    "trainset": "clean",
    "common": "clean",
    "challenge": "challenge",
    "wild": "wild",
    "wild_test": "wild",  # a labeled test split of the second style (the self-training cross-domain test)
}
MANIFEST_NAME = "synthetic.json"
NUM_LANDMARKS = 68

_SHIFT = 4  # cv2 sub-pixel bits: drawing coordinates are multiples of 1/16 px
_ONE = 1 << _SHIFT

# ---------------------------------------------------------------------------------------------------------
# Canonical template: face units, x to the image right, y down, origin between the eyes; the jaw is 2 wide.

_JAW_HALF = np.array(
    [[-1.00, 0.00], [-0.99, 0.29], [-0.97, 0.57], [-0.93, 0.85], [-0.83, 1.10], [-0.67, 1.30],
     [-0.47, 1.45], [-0.24, 1.54], [0.00, 1.57]]
)  # fmt: skip
_RIGHT_BROW = np.array([[-0.80, -0.17], [-0.68, -0.28], [-0.52, -0.32], [-0.36, -0.30], [-0.20, -0.24]])
_NOSE_BRIDGE = np.array([[0.0, -0.02], [0.0, 0.16], [0.0, 0.33], [0.0, 0.50]])
_NOSTRILS = np.array([[-0.22, 0.60], [-0.11, 0.63], [0.0, 0.65], [0.11, 0.63], [0.22, 0.60]])
# 36 outer corner, 37-38 upper lid (outer -> inner), 39 inner corner, 40-41 lower lid (inner -> outer).
_RIGHT_EYE = np.array(
    [[-0.62, 0.00], [-0.53, -0.085], [-0.39, -0.085], [-0.30, 0.01], [-0.39, 0.06], [-0.53, 0.06]]
)
_OUTER_LIPS = np.array(
    [[-0.40, 0.92], [-0.26, 0.84], [-0.11, 0.80], [0.00, 0.82], [0.11, 0.80], [0.26, 0.84], [0.40, 0.92],
     [0.27, 1.02], [0.12, 1.06], [0.00, 1.07], [-0.12, 1.06], [-0.27, 1.02]]
)  # fmt: skip
_INNER_LIPS = np.array(
    [[-0.33, 0.92], [-0.11, 0.90], [0.00, 0.90], [0.11, 0.90], [0.33, 0.92], [0.11, 0.925], [0.00, 0.93],
     [-0.11, 0.925]]
)  # fmt: skip

# Depth bumps added to the rounded-head depth, per landmark group (toward the camera is positive).
_HEAD_DEPTH = 0.75
_CONTOUR_DEPTH_RATIO = 0.85  # silhouette half-depth / half-width of the head's horizontal sections


def _mirror(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0])


def template_68() -> np.ndarray:
    """Canonical frontal 68-point face, (68, 2) in face units (x right, y down, jaw width 2), iBUG order."""
    jaw = np.concatenate([_JAW_HALF, _mirror(_JAW_HALF[-2::-1])])
    left_brow = _mirror(_RIGHT_BROW[::-1])
    # Left eye: 42 inner corner, 43-44 upper (inner -> outer), 45 outer corner, 46-47 lower (outer -> inner).
    left_eye = _mirror(_RIGHT_EYE[[3, 2, 1, 0, 5, 4]])
    return np.concatenate(
        [jaw, _RIGHT_BROW, left_brow, _NOSE_BRIDGE, _NOSTRILS, _RIGHT_EYE, left_eye, _OUTER_LIPS, _INNER_LIPS]
    )


def _depth_bumps() -> np.ndarray:
    bump = np.zeros(NUM_LANDMARKS)
    bump[17:27] = 0.05
    bump[27:31] = [0.10, 0.20, 0.32, 0.45]
    bump[31:36] = [0.15, 0.22, 0.28, 0.22, 0.15]
    bump[36:48] = -0.08
    bump[48:60] = 0.08
    bump[[50, 51, 52]] = 0.12
    bump[60:68] = 0.05
    return bump


_TEMPLATE = template_68()
_BUMPS = _depth_bumps()
_N_FOREHEAD = 15
_phi = np.linspace(0.0, np.pi, _N_FOREHEAD + 2)[1:-1]
_FOREHEAD = np.stack([np.cos(_phi) * 0.99, -np.sin(_phi) * 1.02], axis=1)  # jaw 16 -> over the top -> jaw 0
_phi = np.linspace(-0.30, np.pi + 0.30, 21)
_HAIR = np.stack([np.cos(_phi) * 1.10, 0.05 - np.sin(_phi) * 1.28], axis=1)
del _phi

# ---------------------------------------------------------------------------------------------------------
# Palettes (BGR).

_SKIN = np.array(
    [[189, 224, 255], [160, 205, 245], [135, 185, 232], [110, 160, 210], [85, 130, 180], [60, 100, 145],
     [45, 75, 110], [170, 200, 225]], dtype=np.float64
)  # fmt: skip
_HAIR_COLOURS = np.array(
    [[20, 20, 25], [25, 40, 60], [35, 70, 115], [70, 120, 175], [140, 140, 145], [15, 25, 45]],
    dtype=np.float64,
)
_IRIS = np.array(
    [[30, 60, 100], [150, 115, 60], [75, 125, 70], [40, 40, 50], [60, 90, 120]], dtype=np.float64
)


@dataclass(frozen=True)
class Occluder:
    """A filled shape drawn over the face: ``kind`` 'ellipse' or 'rect', centre/half-sizes in pixels."""

    kind: str
    cx: float
    cy: float
    half_w: float
    half_h: float
    angle: float
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class FaceParams:
    """Every random choice behind one image; :func:`render_face` is a pure function of it."""

    image_size: int
    style: str
    yaw: float  # degrees; positive turns the nose toward the image's right
    pitch: float  # degrees; positive moves the nose up
    roll: float  # degrees, counter-clockwise on screen
    scale: float  # pixels per face unit (the jaw is 2 units wide)
    cx: float  # template origin (between the eyes) in continuous pixels
    cy: float
    mouth_open: float = 0.0  # 0 closed .. 1 wide open
    smile: float = 0.0  # -0.3 (down) .. 1
    brow_raise: float = 0.0  # -0.3 .. 1
    blink: float = 0.0  # 0 open .. 1 closed (sampled up to ~0.7)
    gaze: tuple[float, float] = (0.0, 0.0)
    skin: tuple[float, float, float] = (160.0, 205.0, 245.0)
    lips: tuple[float, float, float] = (110.0, 110.0, 220.0)
    hair: tuple[float, float, float] | None = (25.0, 40.0, 60.0)
    brows: tuple[float, float, float] = (25.0, 40.0, 60.0)
    iris: tuple[float, float, float] = (30.0, 60.0, 100.0)
    clothes: tuple[float, float, float] = (90.0, 60.0, 40.0)
    background: str = "gradient"  # 'gradient', 'noise' or 'clutter'
    bg_colours: tuple[tuple[float, float, float], tuple[float, float, float]] = (
        (200, 200, 200),
        (90, 90, 90),
    )
    light_angle: float = 0.0  # radians, direction of increasing brightness
    light_strength: float = 0.0  # 0 flat .. ~1 harsh
    occluders: tuple[Occluder, ...] = field(default_factory=tuple)
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    grayscale: bool = False
    texture_seed: int = 0


# ---------------------------------------------------------------------------------------------------------
# Geometry.


def _expressive_template(p: FaceParams) -> np.ndarray:
    """(68, 2) template with the expression applied, in face units."""
    t = _TEMPLATE.copy()
    o, s, b, e = p.mouth_open, p.smile, p.brow_raise, p.blink
    lower = [55, 56, 57, 58, 59, 65, 66, 67]
    t[lower, 1] += 0.32 * o
    t[[61, 62, 63], 1] -= 0.02 * o
    t[[48, 54, 60, 64], 1] += 0.12 * o
    jaw_weight = np.clip(1.0 - np.abs(np.arange(17) - 8) / 6.0, 0.0, 1.0)
    t[:17, 1] += 0.22 * o * jaw_weight
    t[[48, 54, 60, 64], 0] *= 1.0 + 0.12 * s
    t[[48, 54, 60, 64], 1] -= 0.08 * s
    t[[49, 53, 55, 59], 1] -= 0.04 * s
    t[17:27, 1] -= 0.10 * b
    for upper, lower_lid in (([37, 38], [41, 40]), ([43, 44], [47, 46])):
        t[upper, 1] += 0.85 * e * (t[lower_lid, 1] - t[upper, 1])
    return t


def _project(points: np.ndarray, depth: np.ndarray, contour: bool, p: FaceParams) -> np.ndarray:
    """Rotate (N, 2) face-unit points with per-point depth by yaw/pitch/roll; (N, 2) face units."""
    yaw, pitch, roll = (math.radians(a) for a in (p.yaw, p.pitch, p.roll))
    x, y = points[:, 0], points[:, 1]
    rotated_x = x * math.cos(yaw) + depth * math.sin(yaw)
    if contour:
        # Silhouette of a rounded head: both sides stay symmetric about the head's axis, so the side the
        # face turns away from gets compressed between the features and the outline; the chin follows the
        # face. w blends the two by closeness to the midline.
        silhouette = x * math.sqrt(math.cos(yaw) ** 2 + (_CONTOUR_DEPTH_RATIO * math.sin(yaw)) ** 2)
        w = (1.0 - np.minimum(np.abs(x), 1.0)) ** 2
        rotated_x = (1.0 - w) * silhouette + w * rotated_x
    rotated_y = y * math.cos(pitch) - depth * math.sin(pitch)
    c, s = math.cos(roll), math.sin(roll)
    return np.stack([c * rotated_x + s * rotated_y, -s * rotated_x + c * rotated_y], axis=1)


def _head_depth(x: np.ndarray) -> np.ndarray:
    return _HEAD_DEPTH * np.sqrt(np.clip(1.0 - x**2, 0.0, None))


def _unit_geometry(p: FaceParams) -> dict[str, np.ndarray]:
    """Projected landmarks and helper outlines in face units (before scale and translation)."""
    t = _expressive_template(p)
    features = _project(t, _head_depth(t[:, 0]) + _BUMPS, False, p)
    jaw = _project(t[:17], _head_depth(t[:17, 0]), True, p)
    landmarks = features.copy()
    landmarks[:17] = jaw
    forehead = _project(_FOREHEAD, _head_depth(_FOREHEAD[:, 0]) * 0.6, True, p)
    hair = _project(_HAIR, _head_depth(np.clip(_HAIR[:, 0], -1, 1)) * 0.5, True, p)
    return {"landmarks": landmarks, "forehead": forehead, "hair": hair}


def face_landmarks(p: FaceParams) -> np.ndarray:
    """(68, 2) landmarks of ``p`` in continuous pixel coordinates (0 = left edge of pixel 0)."""
    return _unit_geometry(p)["landmarks"] * p.scale + np.array([p.cx, p.cy])


# ---------------------------------------------------------------------------------------------------------
# Sampling.

_STYLE_RANGES = {
    # yaw, pitch, roll (max |deg|), occlusion probability, light strength range, open-mouth probability
    "clean": dict(yaw=22.0, pitch=8.0, roll=12.0, occ=0.05, light=(0.0, 0.35), open=0.25, blink=0.3),
    "challenge": dict(yaw=40.0, pitch=14.0, roll=30.0, occ=0.7, light=(0.4, 0.9), open=0.5, blink=0.6),
    # The second style (the self-training pool and cross-domain test): the clean faces' pose and expression
    # ranges under other imaging conditions (palettes, blur, noise, grayscale, occluders, harsher light).
    # Version 1 also widened the pose (yaw 45, roll 35) beyond the clean range; a clean-trained round 0
    # then failed 83% of those faces and its pseudo-labels carried little (experiments/README.md).
    "wild": dict(yaw=22.0, pitch=8.0, roll=12.0, occ=0.35, light=(0.1, 0.7), open=0.25, blink=0.3),
}


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(colour + rng.uniform(-amount, amount, 3), 0, 255))


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(0, 255, 3))


def _wild_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat), rng.uniform(*val)]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def sample_face_params(
    rng: np.random.Generator,
    style: str = "clean",
    image_size: int = 128,
    face_fraction: tuple[float, float] = (0.4, 0.7),
) -> FaceParams:
    """Draw one face: pose, expression, colours, background, lighting, occlusion, degradations.

    The landmark box's longer side is ``face_fraction`` (uniform in the range) of ``image_size``, and
    all 68 landmarks lie inside the image with a margin of 4% of its side.
    """
    if style not in _STYLE_RANGES:
        raise ValueError(f"unknown synthetic style {style!r}; expected one of {STYLES}")
    lo, hi = face_fraction
    if not 0.05 <= lo <= hi <= 0.9:
        raise ValueError(f"face_fraction must satisfy 0.05 <= low <= high <= 0.9, got {face_fraction}")
    r = _STYLE_RANGES[style]
    wild = style == "wild"
    pose = dict(
        yaw=float(rng.uniform(-r["yaw"], r["yaw"])),
        pitch=float(rng.uniform(-r["pitch"], r["pitch"])),
        roll=float(rng.uniform(-r["roll"], r["roll"])),
    )
    expression = dict(
        mouth_open=float(rng.uniform(0.1, 1.0)) if rng.random() < r["open"] else 0.0,
        smile=float(rng.uniform(-0.3, 1.0)),
        brow_raise=float(rng.uniform(-0.3, 1.0)),
        blink=float(rng.uniform(0.0, 0.7)) if rng.random() < r["blink"] else 0.0,
        gaze=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
    )
    if wild:
        skin = _wild_colour(rng, (40, 200), (90, 240))
        lips = _wild_colour(rng, (80, 255), (60, 200))
        hair_c = _wild_colour(rng, (0, 255), (20, 200))
        iris = _wild_colour(rng, (60, 255), (40, 200))
    else:
        skin = _SKIN[rng.integers(len(_SKIN))] + rng.uniform(-12, 12, 3)
        lips = skin * np.array([0.62, 0.58, 0.92]) + rng.uniform(-10, 10, 3)
        hair_c = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))]
        iris = _IRIS[rng.integers(len(_IRIS))]
    bg_kind = ("gradient", "noise", "clutter")[int(rng.integers(3))]
    bg_colours = (_random_colour(rng), _random_colour(rng))
    occluders: list[Occluder] = []
    n_occ = (1 + int(rng.random() < 0.35)) if rng.random() < r["occ"] else 0
    light_angle = float(rng.uniform(-np.pi, np.pi))
    light_strength = float(rng.uniform(*r["light"]))
    has_hair = bool(rng.random() < 0.85)
    clothes = _random_colour(rng)
    blur = float(rng.uniform(0.5, 1.6)) if wild and rng.random() < 0.7 else 0.0
    noise = float(rng.uniform(3.0, 12.0)) if wild and rng.random() < 0.7 else 0.0
    grayscale = bool(wild and rng.random() < 0.2)
    texture_seed = int(rng.integers(2**31))

    p = FaceParams(image_size=int(image_size), style=style, scale=1.0, cx=0.0, cy=0.0, **pose, **expression)
    unit = _unit_geometry(p)["landmarks"]
    span = unit.max(axis=0) - unit.min(axis=0)
    scale = float(rng.uniform(lo, hi)) * image_size / float(span.max())
    margin = 0.04 * image_size
    lo_xy = margin - unit.min(axis=0) * scale
    hi_xy = image_size - margin - unit.max(axis=0) * scale
    centre = np.where(hi_xy > lo_xy, lo_xy + rng.random(2) * (hi_xy - lo_xy), (lo_xy + hi_xy) / 2)
    landmarks = unit * scale + centre
    for _ in range(n_occ):
        anchor = landmarks[int(rng.integers(17, NUM_LANDMARKS))]
        size = scale * rng.uniform(0.25, 0.6, 2)
        colour = _jitter(rng, skin, 20) if rng.random() < 0.25 else _random_colour(rng)
        occluders.append(
            Occluder(
                kind="ellipse" if rng.random() < 0.5 else "rect",
                cx=float(anchor[0] + rng.uniform(-0.2, 0.2) * scale),
                cy=float(anchor[1] + rng.uniform(-0.2, 0.2) * scale),
                half_w=float(size[0]),
                half_h=float(size[1]),
                angle=float(rng.uniform(0, 180)),
                colour=colour,
            )
        )
    return FaceParams(
        image_size=int(image_size),
        style=style,
        scale=scale,
        cx=float(centre[0]),
        cy=float(centre[1]),
        **pose,
        **expression,
        skin=tuple(float(v) for v in np.clip(skin, 0, 255)),
        lips=tuple(float(v) for v in np.clip(lips, 0, 255)),
        hair=tuple(float(v) for v in hair_c) if has_hair else None,
        brows=tuple(float(v) for v in np.clip(hair_c * 0.8, 0, 255)),
        iris=tuple(float(v) for v in iris),
        clothes=clothes,
        background=bg_kind,
        bg_colours=bg_colours,
        light_angle=light_angle,
        light_strength=light_strength,
        occluders=tuple(occluders),
        blur_sigma=blur,
        noise_sigma=noise,
        grayscale=grayscale,
        texture_seed=texture_seed,
    )


# ---------------------------------------------------------------------------------------------------------
# Rendering.


def _fixed(points: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinates -> cv2 fixed-point (pixel centres at integers, _SHIFT fraction bits)."""
    return np.round((points - 0.5) * _ONE).astype(np.int32)


def _shade(colour: Sequence[float], factor: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, c * factor)) for c in colour)


def _thickness(scale: float, fraction: float, minimum: int = 1) -> int:
    return max(minimum, int(round(scale * fraction)))


def _background(p: FaceParams, rng: np.random.Generator) -> np.ndarray:
    size = p.image_size
    c0, c1 = (np.array(c, dtype=np.float32) for c in p.bg_colours)
    if p.background == "noise":
        grid = int(rng.integers(3, 13))
        weights = cv2.resize(
            rng.random((grid, grid)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
        )
    else:
        angle = rng.uniform(-np.pi, np.pi)
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        weights = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None] + 0.5
    weights = np.clip(weights, 0.0, 1.0)[..., None]
    image = np.clip(c0 + (c1 - c0) * weights, 0, 255).astype(np.uint8)
    if p.background == "clutter":
        for _ in range(int(rng.integers(4, 12))):
            colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
            centre = (int(rng.integers(size)), int(rng.integers(size)))
            half = (int(rng.integers(3, size // 3)), int(rng.integers(3, size // 3)))
            if rng.random() < 0.5:
                cv2.ellipse(image, centre, half, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
            else:
                corner = (centre[0] + half[0], centre[1] + half[1])
                cv2.rectangle(image, centre, corner, colour, -1)
    return image


def _draw_eye(image: np.ndarray, eye: np.ndarray, p: FaceParams, scale: float) -> None:
    """Sclera polygon, iris + pupil clipped to it, lid outline; ``eye`` is (6, 2) continuous pixels."""
    size = image.shape[0]
    x0, y0 = np.maximum(np.floor(eye.min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(eye.max(axis=0)).astype(int) + 3, size)
    if x1 <= x0 or y1 <= y0:
        return
    roi = image[y0:y1, x0:x1]
    local = _fixed(eye - np.array([x0, y0]))
    mask = np.zeros(roi.shape[:2], dtype=np.uint8)
    cv2.fillPoly(mask, [local], 255, cv2.LINE_AA, _SHIFT)
    layer = np.empty_like(roi)
    layer[:] = (235, 240, 244)
    width = float(np.linalg.norm(eye[3] - eye[0]))
    centre = eye.mean(axis=0) - np.array([x0, y0])
    centre = centre + np.array(p.gaze) * np.array([0.15 * width, 0.06 * width])
    radius = 0.22 * width
    c_fixed = tuple(int(v) for v in _fixed(centre[None])[0])
    cv2.circle(layer, c_fixed, int(round(radius * _ONE)), p.iris, -1, cv2.LINE_AA, _SHIFT)
    cv2.circle(layer, c_fixed, int(round(0.45 * radius * _ONE)), (15, 15, 15), -1, cv2.LINE_AA, _SHIFT)
    alpha = mask[..., None].astype(np.float32) / 255.0
    roi[:] = (roi * (1.0 - alpha) + layer * alpha).astype(np.uint8)
    lid = _shade(p.brows, 0.7)
    cv2.polylines(roi, [local], True, lid, 1, cv2.LINE_AA, _SHIFT)
    cv2.polylines(roi, [local[:4]], False, lid, _thickness(scale, 0.03), cv2.LINE_AA, _SHIFT)


def render_face(p: FaceParams) -> tuple[np.ndarray, np.ndarray]:
    """Render ``p``.

    Returns:
        image (S, S, 3) uint8 BGR; landmarks (68, 2) float64 in continuous pixel coordinates.
    """
    rng = np.random.default_rng(p.texture_seed)
    size = p.image_size
    geom = _unit_geometry(p)
    offset = np.array([p.cx, p.cy])
    lms = geom["landmarks"] * p.scale + offset
    forehead = geom["forehead"] * p.scale + offset
    hair = geom["hair"] * p.scale + offset
    s = p.scale
    image = _background(p, rng)
    aa = cv2.LINE_AA

    # Shoulders and neck (below the chin, along the rolled face's vertical axis).
    roll = math.radians(p.roll)
    down = np.array([math.sin(roll), math.cos(roll)])
    right = np.array([math.cos(roll), -math.sin(roll)])
    shoulder_centre = tuple(int(v) for v in _fixed((lms[8] + down * 2.7 * s)[None])[0])
    shoulder_axes = (int(2.5 * s * _ONE), int(1.5 * s * _ONE))
    cv2.ellipse(image, shoulder_centre, shoulder_axes, -p.roll, 0, 360, p.clothes, -1, aa, _SHIFT)
    neck = np.array([lms[4], lms[12], lms[12] + down * 1.6 * s, lms[4] + down * 1.6 * s])
    neck[[0, 3]] += right * 0.12 * s
    neck[[1, 2]] -= right * 0.12 * s
    cv2.fillPoly(image, [_fixed(neck)], _shade(p.skin, 0.72), aa, _SHIFT)
    if p.hair is not None:
        cv2.fillPoly(image, [_fixed(hair)], p.hair, aa, _SHIFT)

    # Face: jaw (0..16) then the forehead arc back to jaw 0; the jaw edge is outlined slightly darker.
    outline = np.concatenate([lms[:17], forehead])
    cv2.fillPoly(image, [_fixed(outline)], p.skin, aa, _SHIFT)
    cv2.polylines(image, [_fixed(lms[:17])], False, _shade(p.skin, 0.7), 1, aa, _SHIFT)

    # Brows.
    brow_t = _thickness(s, 0.075, 2)
    for sl in (slice(17, 22), slice(22, 27)):
        cv2.polylines(image, [_fixed(lms[sl])], False, p.brows, brow_t, aa, _SHIFT)

    # Nose: bridge shading along 27-30, the nostril line along 31-35, nostril holes by 32 and 34.
    cv2.polylines(image, [_fixed(lms[27:31])], False, _shade(p.skin, 0.82), _thickness(s, 0.04), aa, _SHIFT)
    cv2.polylines(image, [_fixed(lms[31:36])], False, _shade(p.skin, 0.5), _thickness(s, 0.03), aa, _SHIFT)
    cv2.polylines(
        image, [_fixed(lms[[30, 31]]), _fixed(lms[[30, 35]])], False, _shade(p.skin, 0.75), 1, aa, _SHIFT
    )
    for k in (32, 34):
        centre = tuple(int(v) for v in _fixed((lms[k] + 0.2 * (lms[30] - lms[k]))[None])[0])
        axes = (int(0.05 * s * _ONE) + 1, int(0.03 * s * _ONE) + 1)
        cv2.ellipse(image, centre, axes, -p.roll, 0, 360, _shade(p.skin, 0.35), -1, aa, _SHIFT)

    # Eyes.
    for sl in (slice(36, 42), slice(42, 48)):
        _draw_eye(image, lms[sl], p, s)

    # Lips: outer polygon, dark mouth opening, inner lip line.
    cv2.fillPoly(image, [_fixed(lms[48:60])], p.lips, aa, _SHIFT)
    if np.linalg.norm(lms[66] - lms[62]) > 0.8:
        cv2.fillPoly(image, [_fixed(lms[60:68])], (35, 25, 45), aa, _SHIFT)
    inner = _fixed(lms[[60, 61, 62, 63, 64, 65, 66, 67]])
    cv2.polylines(image, [inner], True, _shade(p.lips, 0.45), 1, aa, _SHIFT)
    cv2.polylines(image, [_fixed(lms[48:60])], True, _shade(p.lips, 0.8), 1, aa, _SHIFT)

    for occ in p.occluders:
        centre = tuple(int(v) for v in _fixed(np.array([[occ.cx, occ.cy]]))[0])
        if occ.kind == "ellipse":
            axes = (int(occ.half_w * _ONE), int(occ.half_h * _ONE))
            cv2.ellipse(image, centre, axes, occ.angle, 0, 360, occ.colour, -1, aa, _SHIFT)
        else:
            box = cv2.boxPoints(((occ.cx - 0.5, occ.cy - 0.5), (2 * occ.half_w, 2 * occ.half_h), occ.angle))
            cv2.fillPoly(image, [np.round(box * _ONE).astype(np.int32)], occ.colour, aa, _SHIFT)

    # Lighting gradient, then the wild style's degradations.
    out = image.astype(np.float32)
    if p.light_strength > 0:
        coords = (np.arange(size, dtype=np.float32) + 0.5 - 0.5 * size) / (1.5 * s)
        ramp = math.cos(p.light_angle) * coords[None, :] + math.sin(p.light_angle) * coords[:, None]
        out *= np.clip(1.0 + p.light_strength * ramp, 0.2, 1.7)[..., None]
    if p.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), p.blur_sigma)
    if p.noise_sigma > 0:
        out += rng.normal(0.0, p.noise_sigma, out.shape).astype(np.float32)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if p.grayscale:
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return out, lms


# ---------------------------------------------------------------------------------------------------------
# Dataset on disk.


def _manifest(
    counts: dict[str, int], image_size: int, seed: int, face_fraction: Sequence[float], fmt: str
) -> dict:
    return {
        "generator": "pipnet_lit.synthetic.faces",
        "generator_version": GENERATOR_VERSION,
        "image_size": int(image_size),
        "seed": int(seed),
        "face_fraction": [float(v) for v in face_fraction],
        "image_format": fmt,
        "pts_convention": "1-based pixel coordinates (300W): pts = continuous + 0.5",
        "styles": {split: SPLIT_STYLES[split] for split in counts},
        "counts": dict(counts),
    }


def _is_complete(root: Path, manifest: dict) -> bool:
    if read_manifest(root / MANIFEST_NAME) != manifest:
        return False
    for split, count in manifest["counts"].items():
        folder = root / split
        if count and (not folder.is_dir() or sum(1 for f in folder.iterdir() if f.suffix == ".pts") != count):
            return False
    return True


def generate_dataset(
    root: str | os.PathLike[str],
    *,
    n_train: int,
    n_common: int,
    n_challenge: int,
    n_wild: int,
    n_wild_test: int = 0,
    image_size: int = 128,
    seed: int = 0,
    face_fraction: tuple[float, float] = (0.4, 0.7),
    image_format: str = "png",
    progress: bool = True,
    force: bool = False,
) -> dict[str, int]:
    """Write synthetic faces in the 300W on-disk format under ``root``.

    Folders ``trainset`` (clean), ``common`` (clean), ``challenge`` (challenge style), ``wild`` (the
    second style: an unlabeled / cross-domain pool) and, when ``n_wild_test`` > 0, ``wild_test`` (a labeled
    test split of the second style), each holding ``synth_<index>.<ext>`` images with
    ``synth_<index>.pts`` (1-based pixels), plus ``synthetic.json`` (parameters and counts). If the manifest
    already matches, nothing is written (cache hit). Otherwise everything is rendered into a temporary
    folder inside ``root`` and swapped in; the manifest is written last, so an interrupted run is never
    taken for a complete one. Other content of ``root`` is left alone. ``force`` regenerates regardless.
    Image ``i`` of a split depends only on ``(seed, split, i)``, so changing one count keeps the rest.

    Returns:
        split folder -> number of images.
    """
    counts = {"trainset": n_train, "common": n_common, "challenge": n_challenge, "wild": n_wild}
    if n_wild_test:  # only when asked, so data sets made before this split existed stay cache hits
        counts["wild_test"] = n_wild_test
    for split, n in counts.items():
        if not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"generate_dataset: the {split} count must be a non-negative int, got {n!r}")
    if image_size < 32:
        raise ValueError(f"generate_dataset: image_size must be at least 32 pixels, got {image_size}")
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("png", "jpg"):
        raise ValueError(f"generate_dataset: image_format must be 'png' or 'jpg', got {image_format!r}")
    counts = {k: int(v) for k, v in counts.items()}
    root = Path(root)
    manifest = _manifest(counts, image_size, seed, face_fraction, fmt)
    if not force and _is_complete(root, manifest):
        return counts

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".synthetic-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    encode = [int(cv2.IMWRITE_JPEG_QUALITY), 95] if fmt == "jpg" else [int(cv2.IMWRITE_PNG_COMPRESSION), 6]
    jobs = [(split_id, split, i) for split_id, split in enumerate(counts) for i in range(counts[split])]
    iterator = iter(jobs)
    if progress and len(jobs) > 50:
        from rich.progress import track

        iterator = track(jobs, description=f"rendering synthetic faces into {root}")
    try:
        for split in counts:
            (tmp / split).mkdir(parents=True)
        for split_id, split, i in iterator:
            rng = np.random.default_rng([int(seed), split_id, i])
            params = sample_face_params(rng, SPLIT_STYLES[split], image_size, face_fraction)
            image, landmarks = render_face(params)
            ok, data = cv2.imencode("." + fmt, image, encode)
            if not ok:
                raise OSError(f"could not encode synthetic image {split}/{i}")
            stem = tmp / split / f"synth_{i:05d}"
            stem.with_suffix("." + fmt).write_bytes(data.tobytes())
            write_pts(stem.with_suffix(".pts"), landmarks + 0.5, decimals=4)
        (root / MANIFEST_NAME).unlink(missing_ok=True)
        for split in counts:
            if (root / split).exists():
                shutil.rmtree(root / split)
            os.replace(tmp / split, root / split)
        write_manifest(root / MANIFEST_NAME, manifest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return counts
