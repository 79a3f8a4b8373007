"""Use minikv's version of a learner's earlier piece where theirs is not done, so each exercise is graded alone
(3.2 calls the learner's 3.1 through their module, 4.2 calls 4.1's ``split_node``, and so on)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from minikv.grade.runner import Learner


def lend(learner: Learner, names: Sequence[str], reference: Mapping[str, Callable[..., Any]],
         is_right: Callable[[str, Any], bool]) -> tuple[dict[str, Callable[..., Any]], str]:
    """The pieces ``names``: the learner's where ``is_right(name, piece)`` (raising counts as False), else
    ``reference[name]``, also set into the learner's module, whose other functions call it by name.
    Returns them and a note for the PASS message (``""`` when every piece was the learner's)."""
    pieces, lent = {}, []
    for name in names:
        mine = learner.find(name)
        already = any(mine is ref for ref in reference.values())  # an earlier check of this run lent it
        if mine is not None and not already and _safely(is_right, name, mine):
            pieces[name] = mine
            continue
        pieces[name] = reference[name]
        lent.append(name)
        if learner.module is not None:
            setattr(learner.module, name, reference[name])
    if not lent:
        return pieces, ""
    return pieces, f" (with minikv's {' and '.join(lent)}: yours {'is' if len(lent) == 1 else 'are'} not done yet)"


def _safely(is_right: Callable[[str, Any], bool], name: str, piece: Any) -> bool:
    try:
        return bool(is_right(name, piece))
    except Exception:  # noqa: BLE001 - a stub's NotImplementedError, a wrong answer's CheckFailed: not right
        return False
