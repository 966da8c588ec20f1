"""Synthetic face-like images with 68 iBUG landmarks, in the 300W on-disk format (see ``faces``)."""

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

__all__ = [
    "SPLIT_STYLES",
    "STYLES",
    "FaceParams",
    "face_landmarks",
    "generate_dataset",
    "render_face",
    "sample_face_params",
    "template_68",
]
