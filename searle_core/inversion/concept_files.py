"""The authors' concept files, ``{model}_top_250_ensembling_image_texts.csv``: per image its 250 most
similar Open Images concepts, columns ``Image Name, 1, ..., 250``; their OTI and φ scripts read them back
stripped, without repeats, the first ``top_k``."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from searle_core.infra.errors import InputError
from searle_core.infra.files import atomic_write_text

NAME_COLUMN = "Image Name"


def authors_concepts_file_name(backbone_name: str, top_k: int = 250) -> str:
    """``ViT-B-32`` -> ``ViT-B32_top_250_ensembling_image_texts.csv`` (their ``ViT-B/32`` without the slash)."""
    model = re.sub(r"^(ViT-[A-Za-z]+)-(\d+)", r"\1\2", backbone_name.removesuffix("-quickgelu"))
    return f"{model}_top_{top_k}_ensembling_image_texts.csv"


def write_concepts_csv(path: str | Path, names: Sequence[str], concepts: Sequence[Sequence[str]]) -> Path:
    """Write each image's concepts, best first, in the authors' layout (atomically); every image needs
    as many concepts, one column per rank."""
    if len(names) != len(concepts):
        raise InputError(f"{path}: {len(names)} image names for {len(concepts)} concept lists")
    width = len(concepts[0]) if concepts else 0
    if any(len(c) != width for c in concepts):
        raise InputError(f"{path}: every image needs the same number of concepts (the first has {width})")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([NAME_COLUMN, *map(str, range(1, width + 1))])
    writer.writerows([str(n), *c] for n, c in zip(names, concepts))
    return atomic_write_text(out.getvalue(), path)


def is_image_concepts_file(path: str | Path) -> bool:
    """Whether ``path`` is a concepts file in the authors' layout (its header starts ``Image Name``),
    rather than a vocabulary such as Open Images' ``LabelName,DisplayName``."""
    try:
        with Path(path).open(encoding="utf-8", newline="") as f:
            header = next(csv.reader([f.readline()]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # the vocabulary reader names the problem
    return bool(header) and header[0].lstrip("\ufeff") == NAME_COLUMN


def read_csv(path: Path, text: str, header_ok: Callable[[list[str]], bool], expected: str) -> tuple[list, list]:
    """The header and rows of CSV ``text``; a bad header or CSV names the file (and line)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header or not header_ok(header):
            raise InputError(f"{path}: expected a header {expected}, got {header}")
        return header, list(reader)
    except csv.Error as err:
        raise InputError(f"{path}, line {reader.line_num}: not valid CSV ({err})") from None


def read_concepts_csv(path: str | Path, top_k: int | None = None) -> dict[str, list[str]]:
    """Image name -> its concepts as their scripts read them: stripped, repeats dropped, the first
    ``top_k`` (all if ``None``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a UTF-8 text file ({err})") from None
    _, rows = read_csv(path, text, lambda h: h[0] == NAME_COLUMN, f"starting '{NAME_COLUMN},1,2,...'")
    out: dict[str, list[str]] = {}
    for row in filter(None, rows):
        concepts = list(dict.fromkeys(c.strip() for c in row[1:] if c.strip()))
        out[row[0]] = concepts[:top_k] if top_k is not None else concepts
    return out
