"""The paper's reported numbers, as data, and reproduced numbers placed beside them.

The numbers live in ``data_files/paper_results.csv`` (long format: dataset, split, backbone, method,
metric, value), copied from the SEARLE paper's tables: CIRR test, FashionIQ validation, CIRCO test; and LinCIR's three
ViT-L/14 headline numbers from its paper, labelled as the original model's.
Nothing else in the project hard-codes them; notebooks and tables read them from here. Only a
number on the same split is a difference to report: a CIRR or CIRCO validation number stands beside
the paper's test number, labelled, and the test-server files (:mod:`searle_core.report.submission`) give
the comparable one. Only the paper's method is a difference to report, too: the paper's Captioning,
PALAVRA and Pic2Word numbers are the original models' (their training data, their captioner), while
this project's rows are re-implementations, so their paper number is shown labelled as the original
model's, never as a difference.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

PAPER_RESULTS_FILE = "paper_results.csv"

#: The paper's row names of each (backbone, method); SEARLE-XL* are the ViT-L/14 runs.
PAPER_METHOD_NAMES: dict[tuple[str, str], str] = {
    ("ViT-B-32", "image-only"): "Image-only",
    ("ViT-B-32", "text-only"): "Text-only",
    ("ViT-B-32", "image+text"): "Image + Text",
    ("ViT-B-32", "captioning"): "Captioning",
    ("ViT-B-32", "palavra"): "PALAVRA",
    ("ViT-B-32", "searle-oti"): "SEARLE-OTI",
    ("ViT-B-32", "searle"): "SEARLE",
    ("ViT-L-14", "pic2word"): "Pic2Word",
    ("ViT-L-14", "searle-oti"): "SEARLE-XL-OTI",
    ("ViT-L-14", "searle"): "SEARLE-XL",
    ("ViT-L-14", "lincir"): "LinCIR (original model)",
}

#: Baselines the project re-implements (other training data, another captioner): the paper's number
#: is the original model's (method -> its name), shown beside ours without a difference.
#: LinCIR's original model trained on millions of captions (CC3M, Stable Diffusion and Midjourney
#: prompts) this project does not reproduce.
REIMPLEMENTED: dict[str, str] = {
    "captioning": "Captioning",
    "palavra": "PALAVRA",
    "pic2word": "Pic2Word",
    "lincir": "LinCIR",
}
REIMPLEMENTED_NOTE = (
    "Captioning, PALAVRA, Pic2Word and LinCIR are re-implemented here (other training data, another "
    "captioner): their paper number is the original model's, shown without a difference."
)

#: The columns of :func:`compare_with_paper`'s result (with the settings columns of the input).
COMPARED_COLUMNS = [
    "dataset",
    "split",
    "backbone",
    "method",
    "metric",
    "reproduced",
    "variant",
    "paper",
    "paper_split",
    "paper_label",
    "diff",
]

#: The metrics (columns) of each paper table, in the paper's order.
PAPER_TABLE_METRICS: dict[str, list[str]] = {
    "cirr": ["Recall@1", "Recall@5", "Recall@10", "Recall@50", "Recall_subset@1", "Recall_subset@2", "Recall_subset@3"],
    "fashioniq": [f"{c}/Recall@{k}" for c in ("shirt", "dress", "toptee", "average") for k in (10, 50)],
    "circo": ["mAP@5", "mAP@10", "mAP@25", "mAP@50"],
}


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    text = resources.files("searle_core").joinpath("data_files", PAPER_RESULTS_FILE)
    with resources.as_file(text) as path:
        return pd.read_csv(path, comment="#")


def paper_results(dataset: str | None = None, backbone: str | None = None) -> pd.DataFrame:
    """The paper's numbers in long format (one row per dataset, backbone, method and metric).

    Args:
        dataset: keep one dataset (``cirr``, ``fashioniq``, ``circo``); ``None``: all.
        backbone: keep one backbone (``ViT-B-32``, ``ViT-L-14``); ``None``: all.
    """
    df = _load().copy()
    if dataset is not None:
        df = df[df.dataset == dataset]
    if backbone is not None:
        df = df[df.backbone == backbone]
    return df.reset_index(drop=True)


def paper_value(dataset: str, backbone: str, method: str, metric: str) -> float | None:
    """One reported number, or ``None`` where the paper reports none ("–")."""
    df = _load()
    hit = df[(df.dataset == dataset) & (df.backbone == backbone) & (df.method == method) & (df.metric == metric)]
    return float(hit.value.iloc[0]) if len(hit) else None


def paper_table(dataset: str) -> pd.DataFrame:
    """One of the paper's tables as printed: rows (backbone, method), columns its metrics."""
    df = paper_results(dataset)
    wide = df.pivot_table(index=["backbone", "method"], columns="metric", values="value", sort=False)
    return wide.reindex(columns=PAPER_TABLE_METRICS[dataset])


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """``{"shirt": {"Recall@10": x}}`` -> ``{"shirt/Recall@10": x}``; keys as in the CSV."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten_metrics(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = float(value)
    return out


def results_frame(evaluations: dict[tuple[str, str, str], dict]) -> pd.DataFrame:
    """Reproduced metrics in the CSV's long format.

    Args:
        evaluations: ``{(dataset, backbone, method): metrics}`` with metrics as returned by
            ``pipeline.evaluate`` (nested dicts are flattened).
    """
    rows = [
        {"dataset": d, "backbone": b, "method": m, "metric": k, "value": v}
        for (d, b, m), metrics in evaluations.items()
        for k, v in flatten_metrics(metrics).items()
    ]
    return pd.DataFrame(rows, columns=["dataset", "backbone", "method", "metric", "value"])


def compare_with_paper(reproduced: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Reproduced numbers with the paper's beside them, and the difference where they are comparable.

    The paper reports CIRR and CIRCO on their test splits (scored by the evaluation servers) and
    FashionIQ on validation. A difference (reproduced - paper) is given only where the reproduced
    split is the paper's split and the row is the paper's method; elsewhere ``diff`` is NaN and the
    paper's number stays, labelled by ``paper_split`` and ``paper_label``: ``"paper"``, or
    ``"original Pic2Word"`` (Captioning, PALAVRA) for a re-implemented baseline, whose paper number
    is the original model's. A row with a ``variant`` (not the paper's method, e.g. OTI on template
    phrases) gets no paper number at all.

    Args:
        reproduced: long format with columns dataset, backbone, method, metric, value, and
            optionally ``split`` (without it no difference is computed) and ``variant``.
        metrics: keep these metrics (default: each dataset's paper-table metrics where it has a
            paper table, else every metric).

    Returns:
        One row per input row (of the kept metrics) with ``reproduced``, ``paper`` (NaN where the
        paper reports nothing, has no such dataset, or the row is a variant), ``paper_split``,
        ``paper_label`` and ``diff``.
    """
    paper = _load()[["dataset", "backbone", "method", "metric", "value", "split"]].rename(
        columns={"value": "paper", "split": "paper_split"}
    )
    df = reproduced.rename(columns={"value": "reproduced"}).merge(
        paper, on=["dataset", "backbone", "method", "metric"], how="left"
    )
    keep = []
    for _, row in df.iterrows():
        wanted = metrics or PAPER_TABLE_METRICS.get(row.dataset)
        keep.append(wanted is None or row.metric in wanted)
    df = df[np.array(keep, dtype=bool)].copy()
    if "variant" in df.columns:
        variant = df.variant.fillna("").astype(str) != ""
        df.loc[variant, ["paper", "paper_split"]] = np.nan
    same_split = df.split == df.paper_split if "split" in df.columns else pd.Series(False, index=df.index)
    reimplemented = df.method.isin(list(REIMPLEMENTED))
    df["paper_label"] = [
        ("" if pd.isna(p) else f"original {REIMPLEMENTED[m]}" if m in REIMPLEMENTED else "paper")
        for m, p in zip(df.method, df.paper)
    ]
    df["diff"] = (df.reproduced - df.paper).where(same_split & ~reimplemented)
    return df.reset_index(drop=True)
