"""A step log for differential checks: the learner's object and minikv's "twin" get the same operations.

A check records each operation with :meth:`Trace.step` before running it on both sides; :meth:`Trace.fail`
raises a one-line CheckFailed naming what differed, the step, its operation and the few before it
(``"allocate returned [3, 1], expected [0, 1], after step 2 (allocate(2)) on BlockPool(...) (earlier: ...)"``).
:meth:`Trace.mirror` requires the learner's code to raise exactly where the reference does (a full pool, a
bad free), so "should have raised" reads the same in every chapter.
"""

from __future__ import annotations

from typing import Any, Callable, NoReturn

from minikv.grade.compare import CheckFailed, call, one_line


class Trace:
    """The operations run so far on ``desc`` (``"KVCache(num_layers=2, ...)"``), for failure messages; ``label``
    prefixes the step number (``"Time 3, "``), ``keep`` is how many earlier steps a message lists."""

    def __init__(self, desc: str, label: str = "", keep: int = 4) -> None:
        self.desc, self.label, self.keep = desc, label, keep
        self.steps: list[str] = []

    def step(self, op: str) -> None:
        """Record the next operation (call before running it)."""
        self.steps.append(op)

    def amend(self, text: str) -> None:
        """Add ``text`` to the current step's description (``" (does not fit)"``)."""
        self.steps[-1] += text

    @property
    def at(self) -> str:
        """``"step 3 (free([1])) on BlockAllocator(4)"``: the current step, without the earlier ones."""
        if not self.steps:
            return f"a new {self.desc}"
        return f"{self.label}step {len(self.steps)} ({self.steps[-1]}) on {self.desc}"

    def where(self) -> str:
        """``"after step 3 (op) on desc (earlier: op1; op2)"``, or ``"on a new desc"`` before any step."""
        if not self.steps:
            return f"on a new {self.desc}"
        before = self.steps[-1 - self.keep:-1]
        more = "...; " if len(self.steps) > self.keep + 1 else ""
        return f"after {self.at}" + (f" (earlier: {more}{'; '.join(before)})" if before else "")

    def fail(self, text: str) -> NoReturn:
        """Raise CheckFailed ``"<text>, <where>"``."""
        raise CheckFailed(one_line(f"{text}, {self.where()}"))

    def expect(self, got: Any, want: Any, what: str, why: str = "") -> None:
        """Fail with ``"<what> is <got>, expected <want><why>"`` unless they are equal."""
        if got != want:
            self.fail(f"{what} is {got!r}, expected {want!r}{why}")

    def call(self, fn: Callable[..., Any], *args: Any, what: str = "") -> Any:
        """``fn(*args)``; what the learner's code raises becomes a CheckFailed naming this step."""
        return call(fn, *args, context=f"{what + ' at ' if what else ''}{self.at}")

    def method(self, obj: Any, name: str, *args: Any) -> Any:
        """``obj.<name>(*args)`` on the learner's object; a missing method is a failure of its own."""
        fn = getattr(obj, name, None)
        if fn is None:
            raise CheckFailed(f"your {type(obj).__name__} has no `{name}` method; keep the stub's names")
        return self.call(fn, *args, what=name)

    def mirror(self, reference: Callable[[], Any], mine: Callable[[], Any], error: type[Exception],
               why: Callable[[], str]) -> tuple[Any, Any] | None:
        """Run ``reference()`` then ``mine()``: ``(want, got)``, or None when both raised ``error``. Where the
        reference raises ``error`` the learner's must too, and only there (else: ``"<step> did not raise <error>
        (<why()>)"``, ``"... raised ValueError instead of <error>"``, ``"... raised <error>, but minikv's did not"``)."""
        try:
            want = reference()
        except error:
            try:
                got = mine()
            except error:
                return None
            except CheckFailed as exc:
                if isinstance(exc.__cause__, error):
                    return None
                raise
            except NotImplementedError:
                raise
            except Exception as exc:  # noqa: BLE001 - the learner's code raised the wrong error
                self.fail(f"{self.steps[-1]} raised {type(exc).__name__} instead of {error.__name__} ({why()}): {exc}")
            shown = got if not isinstance(got, (list, tuple)) else list(got)
            self.fail(f"{self.steps[-1]} did not raise {error.__name__} ({why()}; it returned {shown!r})")
        try:
            return want, self.call(mine)
        except CheckFailed as exc:
            if isinstance(exc.__cause__, error):
                self.fail(f"{self.steps[-1]} raised {error.__name__}, but minikv's did not ({why()}): {exc.__cause__}")
            raise
