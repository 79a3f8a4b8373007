"""Helpers to write a chapter notebook from a Python list of cells.

Each chapter lives in ``tools/make_notebooks/chNN_*.py`` as ``PATH`` (where the
notebook goes) and ``CELLS`` (a list of ``md(...)`` / ``code(...)``). The
written notebook has no outputs, no execution counts and stable cell ids, so
rebuilding an unchanged chapter gives the same bytes (``build.py --check``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parents[2]

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def _clean(src: str) -> str:
    return textwrap.dedent(src).strip("\n")


def md(src: str) -> NotebookNode:
    """A markdown cell (source dedented)."""
    return nbformat.v4.new_markdown_cell(_clean(src))


def code(src: str) -> NotebookNode:
    """A code cell (source dedented), with no outputs."""
    return nbformat.v4.new_code_cell(_clean(src))


def notebook(cells: list[NotebookNode], prefix: str) -> NotebookNode:
    """A v4 notebook with deterministic cell ids ``{prefix}-{index}``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, cell in enumerate(cells):
        cell.id = f"{prefix}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(nb: NotebookNode) -> str:
    """The exact text written to disk."""
    return nbformat.writes(nb) + "\n"
