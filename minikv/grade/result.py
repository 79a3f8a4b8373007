"""What grading returns: a :class:`Result` per exercise, shown as text, HTML (notebooks) or JSON."""

from __future__ import annotations

import html
import shutil
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, TODO, SKIP = "PASS", "FAIL", "TODO", "SKIP"
STATUSES = (PASS, FAIL, TODO, SKIP)
_MARK = {PASS: "✓", FAIL: "✗", TODO: "…", SKIP: "-"}
_COLOUR = {PASS: "#1a7f37", FAIL: "#cf222e", TODO: "#9a6700", SKIP: "#6e7781"}


@dataclass
class CheckResult:
    """One check: its ``name``, ``status`` (PASS / FAIL / TODO / SKIP = not run) and a one-line ``message``."""

    name: str
    status: str
    message: str = ""


@dataclass
class Result:
    """One exercise's grade.

    ``status``: PASS (every check passed), FAIL (a check failed, or the code crashed
    or timed out), TODO (the code raised NotImplementedError: not started or not
    finished) or SKIP (needs a GPU and none is there). ``passed``/``total`` count
    checks; ``message`` is the first problem, ``hint`` what to try (on FAIL).
    """

    id: str
    title: str
    chapter: int
    status: str
    passed: int
    total: int
    message: str = ""
    hint: str = ""
    source: str = ""
    seconds: float = 0.0
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the exercise passed."""
        return self.status == PASS

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out

    def __repr__(self) -> str:
        head = f"Exercise {self.id} ({self.title}): {self.status}  {self.passed}/{self.total} checks"
        if self.source:
            head += f"  [{self.source}]"
        lines = [head]
        for c in self.checks:
            lines.append(f"  {_MARK.get(c.status, '?')} {c.name}" + (f": {c.message}" if c.message else ""))
        if self.status == SKIP or (not self.checks and self.message):
            lines.append(f"  {self.message}")
        if self.status == FAIL and self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = _COLOUR.get(self.status, "#000")
        esc = html.escape
        badge = (f'<span style="background:{colour};color:white;padding:1px 8px;border-radius:4px;'
                 f'font-weight:bold">{esc(self.status)}</span>')
        rows = []
        for c in self.checks:
            msg = f": {esc(c.message)}" if c.message else ""
            rows.append(f'<li><span style="color:{_COLOUR.get(c.status, "#000")}">{_MARK.get(c.status, "?")}</span> '
                        f"{esc(c.name)}{msg}</li>")
        if self.status == SKIP or (not self.checks and self.message):
            rows.append(f"<li>{esc(self.message)}</li>")
        hint = (f'<div style="margin-top:4px"><b>hint:</b> {esc(self.hint)}</div>'
                if self.status == FAIL and self.hint else "")
        source = f' <span style="color:#6e7781">({esc(self.source)})</span>' if self.source else ""
        return (f'<div style="font-family:monospace"><div>{badge} <b>Exercise {esc(self.id)}</b>: '
                f"{esc(self.title)} &mdash; {self.passed}/{self.total} checks{source}</div>"
                f'<ul style="list-style:none;padding-left:1em;margin:4px 0">{"".join(rows)}</ul>{hint}</div>')


def summary(results: list[Result]) -> str:
    """``2/3 passed`` (plus ``, 1 skipped (needs a GPU)`` when some were skipped)."""
    ran = [r for r in results if r.status != SKIP]
    text = f"{sum(r.ok for r in ran)}/{len(ran)} passed"
    skipped = len(results) - len(ran)
    return text + (f", {skipped} skipped (needs a GPU)" if skipped else "")


def table(results: list[Result], width: int | None = None) -> str:
    """The grader's table: ex, title, status, checks, first problem (wrapped), hint on failure, then the summary."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    title_w = max([len("title")] + [len(r.title) for r in results])
    ex_w = max([2] + [len(r.id) for r in results])
    left = f" {'ex':<{ex_w}}  {'title':<{title_w}}  status  checks  "
    indent = " " * len(left)
    lines = [left + "first problem"]
    wrap_w = max(30, width - len(indent))
    for r in results:
        row = f" {r.id:<{ex_w}}  {r.title:<{title_w}}  {r.status:<6}  {f'{r.passed}/{r.total}':<6}  "
        text = r.message if r.status != PASS else ""
        chunks = textwrap.wrap(text, wrap_w) or [""]
        if r.status == FAIL and r.hint:
            chunks += textwrap.wrap("hint: " + r.hint, wrap_w)
        lines.append((row + chunks[0]).rstrip())
        lines.extend(indent + c for c in chunks[1:])
    lines.append(summary(results))
    return "\n".join(lines)
