"""Write the chapter notebooks from their scripts: ``python tools/make_notebooks/build.py [--check]``.

``--check`` writes nothing and fails if a committed notebook differs from what
its script produces (edit the script, not the .ipynb, then rebuild).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from nbtools import ROOT, notebook, render  # noqa: E402


def chapter_scripts() -> list[Path]:
    return sorted(HERE.glob("ch[0-9][0-9]_*.py"))


def build(script: Path) -> tuple[Path, str]:
    """(notebook path, notebook text) for one chapter script."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return ROOT / mod.PATH, render(notebook(mod.CELLS, prefix=script.stem.split("_")[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if a notebook is out of date; write nothing")
    args = ap.parse_args(argv)
    stale = []
    for script in chapter_scripts():
        path, text = build(script)
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(f"{path.relative_to(ROOT)} differs from {script.relative_to(ROOT)}")
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    for line in stale:
        print(f"stale: {line}; run python tools/make_notebooks/build.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
