"""Generate the learner's stubs in ``exercises/`` from the reference in ``solutions/``.

Convention (one source of truth):

* ``solutions/chNN_topic.py`` is ordinary, importable Python. Code the learner
  must write sits between a line ``### BEGIN SOLUTION`` and a line
  ``### END SOLUTION`` (nothing else on those lines; regions do not nest).
* A region belongs to the innermost enclosing ``def`` or ``class`` whose
  docstring's first line reads ``Exercise N.M: <title>`` (N = the file's
  chapter). A class exercise may hold one region per method; the methods'
  own docstrings need no tag. Every tagged def/class holds at least one region.
* In ``exercises/chNN_topic.py`` each region becomes one line, indented like
  its ``### BEGIN SOLUTION`` marker::

      raise NotImplementedError("Exercise N.M: <title> - see chapters/NN_topic.ipynb")

  Everything else (imports, signatures, docstrings, code outside regions) is
  copied as is, below a header that says where the file comes from and holds
  a checksum of the generated text.
* ``minikv exercises`` writes every stub file. It replaces a file only when it
  is missing, already current, or untouched since it was generated (its body
  still matches its checksum); a file with the learner's edits is kept unless
  ``--force``. ``minikv exercises --check`` writes nothing and exits 1 when a
  file differs from what would be generated (CI runs it).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from minikv.errors import MinikvError
from minikv.grade.layout import chapter_of, notebook_for, repo_root

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>### (?:BEGIN|END) SOLUTION)[ \t]*$")
_TAG = re.compile(r"^Exercise (?P<id>(?P<chapter>\d+)\.\d+):\s*(?P<title>\S.*?)\s*$")
_CHECKSUM = re.compile(r"^# checksum: (?P<digest>[0-9a-f]{16})$", re.MULTILINE)
HEADER_LINES = 4


@dataclass(frozen=True)
class Region:
    """Lines ``begin``..``end`` (1-based, markers included) of a solution region of exercise ``exercise_id``."""

    begin: int
    end: int
    indent: str
    exercise_id: str
    title: str


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _tagged_nodes(tree: ast.Module, source: str) -> list[tuple[ast.AST, str, str]]:
    """(node, exercise id, title) for every def/class whose docstring starts ``Exercise N.M: title``."""
    chapter = chapter_of(Path(source).stem)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node)
            match = _TAG.match(doc.splitlines()[0]) if doc else None
            if match:
                if int(match["chapter"]) != chapter:
                    raise MinikvError(
                        f"{source}:{node.lineno}: `{node.name}` is tagged Exercise {match['id']} "
                        f"but the file is chapter {chapter}; number it {chapter}.M"
                    )
                found.append((node, match["id"], match["title"].rstrip(".")))
    return found


def find_regions(text: str, source: str) -> list[Region]:
    """Every solution region of ``text`` (the contents of ``source``), with the exercise it belongs to."""
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as exc:
        raise MinikvError(f"{source}:{exc.lineno}: not valid Python ({exc.msg}); fix it before generating") from None
    tagged = _tagged_nodes(tree, source)
    regions, open_at, indent = [], None, ""
    for number, line in enumerate(text.splitlines(), start=1):
        match = _MARKER.match(line)
        if match is None:
            if BEGIN in line or END in line:
                raise MinikvError(f"{source}:{number}: a solution marker must stand alone on its line")
            continue
        if match["marker"] == BEGIN:
            if open_at is not None:
                raise MinikvError(f"{source}:{number}: {BEGIN} inside the region opened on line {open_at}")
            open_at, indent = number, match["indent"]
            continue
        if open_at is None:
            raise MinikvError(f"{source}:{number}: {END} without a {BEGIN} before it")
        # a def/class ends at its last statement, so the END comment may lie past it: place by BEGIN
        owners = [(n, i, t) for n, i, t in tagged if n.lineno < open_at <= (n.end_lineno or 0)]
        if not owners:
            raise MinikvError(
                f"{source}:{open_at}: this solution region is not inside a def/class whose docstring "
                "starts with 'Exercise N.M: <title>'"
            )
        _, exercise_id, title = max(owners, key=lambda o: o[0].lineno)  # the innermost
        regions.append(Region(open_at, number, indent, exercise_id, title))
        open_at = None
    if open_at is not None:
        raise MinikvError(f"{source}:{open_at}: {BEGIN} is never closed by {END}")
    with_region = {r.exercise_id for r in regions}
    for node, exercise_id, _ in tagged:
        if exercise_id not in with_region:
            raise MinikvError(f"{source}:{node.lineno}: Exercise {exercise_id} has no {BEGIN} ... {END} region")
    return regions


def generate(text: str, source: str) -> str:
    """The stub file for solution ``text`` read from ``source`` (``solutions/chNN_topic.py``)."""
    stem = Path(source).stem
    notebook = notebook_for(stem)
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    regions = {r.begin: r for r in find_regions(text, source)}
    number = 1
    while number <= len(lines):
        region = regions.get(number)
        if region is None:
            out.append(lines[number - 1])
            number += 1
            continue
        message = json.dumps(f"Exercise {region.exercise_id}: {region.title} - see {notebook}", ensure_ascii=False)
        out.append(f"{region.indent}raise NotImplementedError({message})\n")
        number = region.end + 1
    body = "".join(out)
    try:
        compile(body, f"exercises/{stem}.py", "exec")
    except SyntaxError as exc:  # e.g. a region that was a whole block body next to other statements
        raise MinikvError(f"{source}: the generated stub does not compile (line {exc.lineno}: {exc.msg})") from None
    header = (
        f"# GENERATED by `minikv exercises` from solutions/{stem}.py: replace each `raise NotImplementedError`.\n"
        f"# Check your work with `minikv grade --chapter {chapter_of(stem)}` or minikv.grade.check(...) in {notebook}.\n"
        "# Regenerate with `minikv exercises` (it keeps a file you edited unless --force).\n"
        f"# checksum: {_digest(body)}\n"
    )
    return header + body


def is_untouched(text: str) -> bool:
    """True when ``text`` is a generated stub file nobody edited since (its body matches its checksum)."""
    lines = text.splitlines(keepends=True)
    match = _CHECKSUM.match(lines[HEADER_LINES - 1].rstrip("\n")) if len(lines) >= HEADER_LINES else None
    return match is not None and match["digest"] == _digest("".join(lines[HEADER_LINES:]))


def plan(root: Path) -> list[tuple[Path, str]]:
    """(exercise file, its generated text) for every ``solutions/ch*.py`` under ``root``."""
    sources = sorted((root / "solutions").glob("ch[0-9][0-9]_*.py"))
    if not sources:
        raise MinikvError(f"no solutions/chNN_*.py files under {root}; nothing to generate")
    return [
        (root / "exercises" / src.name, generate(src.read_text(encoding="utf-8"), f"solutions/{src.name}"))
        for src in sources
    ]


def main(argv: list[str] | None = None) -> int:
    """``minikv exercises [--check] [--force] [--root DIR]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="minikv exercises",
        description="Write exercises/chNN_*.py (stubs) from solutions/chNN_*.py.",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a stub file is out of date")
    parser.add_argument("--force", action="store_true", help="overwrite stub files even if you edited them")
    parser.add_argument("--root", type=Path, help="course folder (default: found automatically)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        root = (args.root or repo_root()).resolve()
        todo = plan(root)
    except MinikvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale, kept = [], []
    for path, text in todo:
        name = path.relative_to(root)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            if not args.check:
                print(f"up to date: {name}")
            continue
        if args.check:
            stale.append(name)
            continue
        if current is not None and not args.force and not is_untouched(current):
            kept.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {name}")
    for name in stale:
        print(f"out of date: {name} (run `minikv exercises` to regenerate it from solutions/)")
    for name in kept:
        print(f"kept {name}: it has your edits; rerun with --force to replace it with fresh stubs", file=sys.stderr)
    return 1 if stale or kept else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
