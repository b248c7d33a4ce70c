"""The paper's reported numbers (``data_files/paper_results.csv``: SEARLE's tables and LinCIR's three ViT-L/14
headline numbers) and reproduced numbers beside them: a difference only on the paper's split and for the paper's
own method; re-implemented baselines stand beside the original model's number, labelled."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from searle_core.report.table import flatten

#: Baselines re-implemented here (other training data, another captioner) -> the original model's name.
REIMPLEMENTED = {"captioning": "Captioning", "palavra": "PALAVRA", "pic2word": "Pic2Word", "lincir": "LinCIR"}
REIMPLEMENTED_NOTE = (
    "Captioning, PALAVRA, Pic2Word and LinCIR are re-implemented here (other training data, another "
    "captioner): their paper number is the original model's, shown without a difference."
)
#: The columns of :func:`compare_with_paper`'s result (with the settings columns of the input).
COMPARED_COLUMNS = "dataset split backbone method metric reproduced variant paper paper_split paper_label diff".split()
#: The metrics (columns) of each paper table, in the paper's order.
PAPER_TABLE_METRICS: dict[str, list[str]] = {
    "cirr": ["Recall@1", "Recall@5", "Recall@10", "Recall@50", "Recall_subset@1", "Recall_subset@2", "Recall_subset@3"],
    "fashioniq": [f"{c}/Recall@{k}" for c in ("shirt", "dress", "toptee", "average") for k in (10, 50)],
    "circo": ["mAP@5", "mAP@10", "mAP@25", "mAP@50"],
}


@lru_cache(maxsize=1)
def paper_results() -> pd.DataFrame:
    """The paper's numbers in long format: dataset, split, backbone, method, metric, value."""
    with resources.as_file(resources.files("searle_core").joinpath("data_files", "paper_results.csv")) as path:
        return pd.read_csv(path, comment="#")


def results_frame(evaluations: dict[tuple[str, str, str], dict]) -> pd.DataFrame:
    """``{(dataset, backbone, method): metrics}`` (nested metrics flattened) in the CSV's long format."""
    rows = [
        {"dataset": d, "backbone": b, "method": m, "metric": k, "value": v}
        for (d, b, m), metrics in evaluations.items()
        for k, v in flatten(metrics).items()
    ]
    return pd.DataFrame(rows, columns=["dataset", "backbone", "method", "metric", "value"])


def compare_with_paper(reproduced: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Reproduced numbers (long: dataset, backbone, method, metric, value, optional ``split``, ``variant``) with the
    paper's beside them (``paper_split``, ``paper_label``, ``diff``), kept to ``metrics`` (default: each dataset's
    paper-table metrics, else all). ``diff`` only on the paper's split for the paper's own method or a row of the
    original checkpoint (LinCIR's, in ``phi_source``); a re-implemented baseline's is labelled ``"original <model>"``;
    a variant row gets no paper number."""
    paper = paper_results()[["dataset", "backbone", "method", "metric", "value", "split"]].rename(
        columns={"value": "paper", "split": "paper_split"}
    )
    df = reproduced.rename(columns={"value": "reproduced"}).merge(
        paper, on=["dataset", "backbone", "method", "metric"], how="left"
    )
    wanted = [metrics or PAPER_TABLE_METRICS.get(d) for d in df.dataset]
    keep = [w is None or m in w for w, m in zip(wanted, df.metric)]
    df = df[np.array(keep, dtype=bool)].copy()
    if "variant" in df.columns:
        df.loc[df.variant.fillna("").astype(str) != "", ["paper", "paper_split"]] = np.nan
    same_split = df.split == df.paper_split if "split" in df.columns else pd.Series(False, index=df.index)
    source = df.phi_source.fillna("").astype(str) if "phi_source" in df.columns else pd.Series("", index=df.index)
    reimplemented = df.method.isin(list(REIMPLEMENTED)) & ~((df.method == "lincir") & (source != ""))
    df["paper_label"] = [
        ("" if pd.isna(p) else f"original {REIMPLEMENTED[m]}" if r else "paper")
        for m, p, r in zip(df.method, df.paper, reimplemented)
    ]
    df["diff"] = (df.reproduced - df.paper).where(same_split & ~reimplemented)
    return df.reset_index(drop=True)
