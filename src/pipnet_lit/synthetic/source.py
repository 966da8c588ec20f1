"""The synthetic faces as a prepared source of the data module (``data.sources.<folder>``).

A data config names it like any other object::

    sources:
      synthetic:                                # the download folder under data.root (the splits' `dir`)
        _target_: pipnet_lit.synthetic.SyntheticFaces
        n_train: 1500
        n_common: 200
        n_challenge: 100
        n_wild: 100
        image_size: 192
        seed: 0

and ``LandmarkDataModule.prepare_data`` calls ``prepare(<data.root>/synthetic)`` before reading the splits
there: `generate_dataset` with exactly these arguments (a no-op when the manifest on disk matches them).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

from pipnet_lit.synthetic.faces import generate_dataset


class SyntheticFaces:
    """Renders the synthetic faces (`generate_dataset`) into the folder the data module hands it.

    Args:
        **options: keyword arguments of `generate_dataset` besides ``root`` (``n_train``, ``n_common``,
            ``n_challenge``, ``n_wild``, ``n_wild_test``, ``image_size``, ``seed``, ``face_fraction``,
            ``image_format``, ``progress``, ``force``); checked against its signature here, so a misspelt
            option fails when the config is instantiated, not after a training job started.
    """

    def __init__(self, **options: Any) -> None:
        signature = inspect.signature(generate_dataset)
        valid = [name for name in signature.parameters if name != "root"]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TypeError(f"SyntheticFaces: unknown option(s) {unknown}; generate_dataset takes {valid}")
        try:
            signature.bind("<folder>", **options)
        except TypeError as err:
            raise TypeError(f"SyntheticFaces: {err} (an option of generate_dataset)") from None
        # plain lists for sequences (a Hydra config hands face_fraction over as a ListConfig)
        self.options = {k: _plain(v) for k, v in options.items()}

    def prepare(self, folder: str | os.PathLike[str]) -> None:
        """Write (or find, unchanged) the synthetic faces in ``folder``."""
        generate_dataset(folder, **self.options)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"SyntheticFaces({args})"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
