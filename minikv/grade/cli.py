"""``minikv grade [ID ...] [--chapter N] [--impl exercises|solutions] [--json] [--timeout S] [--file PATH]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minikv.errors import MinikvError
from minikv.grade import layout
from minikv.grade.result import SKIP, summary, table
from minikv.grade.runner import DEFAULT_TIMEOUT, grade


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minikv grade", description="Grade the course exercises (default: all of them).")
    p.add_argument("ids", nargs="*", metavar="ID", help="exercises to grade, e.g. 1.2 1.3")
    p.add_argument("--chapter", type=int, help="only this chapter's exercises")
    p.add_argument("--impl", choices=layout.IMPLS, default=None,
                   help="grade exercises/ (yours) or solutions/ (default: $MINIKV_IMPL, else exercises)")
    p.add_argument("--file", type=Path, help="grade this Python file instead (e.g. a teacher's test variant)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds per exercise before it counts as FAIL (default {DEFAULT_TIMEOUT:g})")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the grader CLI; 0 when every selected exercise passed (GPU ones skipped on a CPU), 1 otherwise, 2 on a usage error."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        impl = args.impl or layout.default_impl()
        results = grade(args.ids or None, chapter=args.chapter, impl=impl, module_override=args.file,
                        timeout=args.timeout, stdout_to_stderr=args.json)
    except MinikvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ran = [r for r in results if r.status != SKIP]
    if args.json:
        payload = {
            "impl": impl if args.file is None else str(args.file),
            "passed": sum(r.ok for r in ran),
            "total": len(ran),
            "skipped": len(results) - len(ran),
            "summary": summary(results),
            "results": [r.to_dict() for r in results],
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        print(table(results))
    return 0 if all(r.ok for r in ran) else 1
