"""Small checks shared by every user-facing option: ints, numbers, flags, seeds.

Each raises :class:`~minikv.errors.InvalidRequestError` naming the option, the
value it got (and its type, when the type is the problem) and what to give
instead. ``bool`` is never taken for an int, although Python lets it be one:
``max_tokens=True`` is a mistake, not a request for one token.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from minikv.errors import InvalidRequestError

SEED_RANGE = (0, 2**64 - 1)
"""Seeds torch's generators accept without wrapping around: 0 .. 2**64 - 1."""


def describe(value: Any) -> str:
    """``value`` as the user wrote it, with its type: ``'2.5' (str)``."""
    return f"{value!r} ({type(value).__name__})"


def _tail(hint: str) -> str:
    return f"; {hint}" if hint else ""


def is_int(value: Any) -> bool:
    """An integer that is not a bool (numpy integers count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int | None = None, *, expected: str | None = None,
              hint: str = "") -> int:
    """``value`` as a plain int, or an error: not an int (bools and floats included), or below ``minimum``.

    ``expected`` words the range in the message (default ``"at least {minimum}"``).
    """
    if not is_int(value):
        raise InvalidRequestError(f"{name} must be an int, got {describe(value)}{_tail(hint)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InvalidRequestError(f"{name} must be {expected or f'at least {minimum}'} (got {value}){_tail(hint)}")
    return value


def check_optional_int(name: str, value: Any, minimum: int | None = None, *, expected: str | None = None,
                       hint: str = "") -> int | None:
    """Like :func:`check_int`, but ``None`` passes through (meaning "the default")."""
    return None if value is None else check_int(name, value, minimum, expected=expected, hint=hint)


def check_number(name: str, value: Any, *, hint: str = "") -> float:
    """``value`` as a finite float, or an error: not a real number (bools and strings included), nan or inf."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRequestError(f"{name} must be a number, got {describe(value)}{_tail(hint)}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a finite number (got {value}){_tail(hint)}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; a truthy string such as ``"yes"`` is refused."""
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be True or False, got {describe(value)}")
    return value


def check_seed(name: str, value: Any, *, none_means: str) -> int | None:
    """A seed in :data:`SEED_RANGE`, or ``None`` (whose meaning ``none_means`` spells out in the message)."""
    if value is None:
        return None
    low, high = SEED_RANGE
    hint = f"give an int from {low} to 2**64 - 1, or None ({none_means})"
    if not is_int(value):
        raise InvalidRequestError(f"{name} must be an int, got {describe(value)}; {hint}")
    if not low <= int(value) <= high:
        raise InvalidRequestError(f"{name}={int(value)} is out of range; {hint}")
    return int(value)


def check_token_ids(name: str, value: Any, *, nonnegative: bool = True, hint: str = "") -> list[int]:
    """A list or tuple of int token ids (not bools; ``>= 0`` if ``nonnegative``), as a list of plain ints."""
    if not isinstance(value, (list, tuple)):
        raise InvalidRequestError(f"{name} must be a list of ints (token ids), got {describe(value)}{_tail(hint)}")
    for i, t in enumerate(value):
        if not is_int(t):
            raise InvalidRequestError(f"{name} must be a list of ints (token ids), but item {i} is "
                                      f"{describe(t)}{_tail(hint)}")
        if nonnegative and t < 0:
            raise InvalidRequestError(f"{name}: token ids are >= 0, but item {i} is {int(t)}{_tail(hint)}")
    return [int(t) for t in value]
