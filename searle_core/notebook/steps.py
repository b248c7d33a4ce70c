"""Small named steps of the notebooks, so that their cells hold no string building of their own.

Record keys are built here: a notebook's JSON (:mod:`searle_core.notebook.record`) names a method's
metric ``<method>/<metric>`` (``searle-oti/mAP@10``; FashionIQ's and CIRCO's nested metrics flattened
as ``<method>/<group>/<metric>``), in every notebook alike.
"""

from __future__ import annotations

from searle_core.report.table import flatten


def metric_key(method: str, metric: str) -> str:
    """The record key of one metric of one method: ``searle-oti/mAP@10``."""
    return f"{method}/{metric}"


def method_metrics(method: str, metrics: dict) -> dict[str, float]:
    """A method's metrics (nested or flat, as ``evaluate`` returns them) keyed for a record.

    Args:
        method: the method's name (``searle``, ``searle-oti``, ``image-only``, ...).
        metrics: metric -> value, nested dicts allowed (FashionIQ categories, CIRCO aspects).

    Returns:
        :func:`metric_key` -> value, one entry per (flattened) metric.
    """
    return {metric_key(method, k): v for k, v in flatten(metrics).items()}
