"""The PIPNet paper's published NMEs as data: which test subset, metric key and backbone each belongs to.

Keys are the ones our runs write: the subset as in ``test_metrics.json`` (``<dataset>_<subset>``, the dataset
YAML's ``name``), the metric key from the dataset YAML's ``metrics:`` and ``model.backbone``. Values are in
percent, as published. ``python -m pipnet_lit.compare`` puts them beside each matching run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperNME:
    """One published number: NME in percent of ``backbone`` on ``subset`` under the metric ``metric``."""

    subset: str  # e.g. "300w_full" (test_metrics.json's subset key)
    metric: str  # e.g. "nme_io" (the dataset YAML's metric key)
    backbone: str  # e.g. "resnet101" (model.backbone)
    nme: float  # percent
    source: str


_PAPER = "PIPNet (Jin, Liao & Shao), results listing, ResNet-101"
_COFW = "PIPNet ResNet-101 as given in public comparison tables"

#: Only the confirmed ResNet-101 rows. To add a row (e.g. ResNet-18 / ResNet-50 once checked against the
#: paper's tables), append ``PaperNME("300w_full", "nme_io", "resnet18", <value in %>, "<where it is
#: printed>")``: the subset key as in test_metrics.json, the metric key of the dataset YAML and the
#: backbone as ``model.backbone`` spells it. tests/test_report.py checks that keys stay unique.
PAPER_NMES: tuple[PaperNME, ...] = (
    PaperNME("300w_full", "nme_io", "resnet101", 3.19, _PAPER),
    PaperNME("300w_common", "nme_io", "resnet101", 2.78, _PAPER),
    PaperNME("300w_challenge", "nme_io", "resnet101", 4.89, _PAPER),
    PaperNME("wflw_full", "nme_io", "resnet101", 4.31, _PAPER),
    PaperNME("cofw_full", "nme_io", "resnet101", 3.08, _COFW),
    PaperNME("aflw_full", "nme_crop", "resnet101", 1.42, _PAPER),
)


def paper_nmes(subset: str, backbone: str | None, metrics: list[str] | None = None) -> list[PaperNME]:
    """The published NMEs of ``backbone`` on ``subset`` (restricted to the metric keys in ``metrics``).

    An unknown backbone (``None``) matches nothing: a published number is only compared with the same network.
    """
    if backbone is None:
        return []
    return [
        p
        for p in PAPER_NMES
        if p.subset == subset and p.backbone == backbone.lower() and (metrics is None or p.metric in metrics)
    ]
