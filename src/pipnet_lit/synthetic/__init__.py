"""Synthetic face-like images with 68 iBUG landmarks, in the 300W on-disk format (see ``faces``).

`SyntheticFaces` renders them as the data module's prepared source (``data.sources.<folder>``, ``source``).
"""

from pipnet_lit.synthetic.faces import (
    SPLIT_STYLES,
    STYLES,
    FaceParams,
    face_landmarks,
    generate_dataset,
    render_face,
    sample_face_params,
    template_68,
)
from pipnet_lit.synthetic.source import SyntheticFaces

__all__ = [
    "SPLIT_STYLES",
    "STYLES",
    "FaceParams",
    "SyntheticFaces",
    "face_landmarks",
    "generate_dataset",
    "render_face",
    "sample_face_params",
    "template_68",
]
