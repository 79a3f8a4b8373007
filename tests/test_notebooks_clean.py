"""The committed chapter notebooks are clean: valid nbformat, no outputs, no execution counts.

Notebooks are committed as the learner should first see them (nothing run yet),
and those written by ``tools/make_notebooks`` must match their scripts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))


def test_there_are_chapters() -> None:
    assert NOTEBOOKS, "no notebooks found in chapters/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4, f"{path.name}: nbformat {nb.nbformat}, expected 4"
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in metadata; clear it before committing"
    for i, cell in enumerate(nb.cells):
        where = f"{path.name} cell {i}"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{where}: has outputs; clear them before committing"
            assert cell.execution_count is None, f"{where}: has an execution count; clear outputs before committing"
        assert "execution" not in cell.get("metadata", {}), f"{where}: has execution timing metadata"
        assert "attachments" not in cell or not cell.attachments, f"{where}: has attachments"


def test_generated_notebooks_match_their_scripts() -> None:
    script = ROOT / "tools" / "make_notebooks" / "build.py"
    if not script.exists():
        pytest.skip("no notebook generator")
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr or proc.stdout
