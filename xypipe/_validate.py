"""Validators for stage configs, with messages an operator can act on.

Every validator knows how to say what it *expected*, so a wrong type and a wrong value produce the
same sentence: ``interval_ms: expected an integer 1..1000, got "fast"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import attrs


def show(value: object) -> str:
    """Render a config value the way it would be written in TOML/JSON."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


class Invalid(ValueError):
    """A config value is wrong. ``field`` is the attribute name, ``expected`` says what fits."""

    def __init__(self, field: str, expected: str, got: object) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(f"{field}: {expected}, got {show(got)}")


@attrs.frozen
class _Validator:
    expected: str
    check: Callable[[Any], bool]

    def __call__(self, inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and attribute.default is None:
            return
        if not self.check(value):
            raise Invalid(attribute.name, self.expected, value)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def in_range(lo: float, hi: float) -> _Validator:
    """An integer (when both bounds are ints) or a number within ``lo..hi`` inclusive."""
    if isinstance(lo, int) and isinstance(hi, int):
        return _Validator(f"expected an integer {lo}..{hi}", lambda v: _is_int(v) and lo <= v <= hi)
    return _Validator(
        f"expected a number {lo:g}..{hi:g}", lambda v: _is_number(v) and lo <= v <= hi
    )


def one_of(choices: Iterable[str]) -> _Validator:
    options = tuple(choices)
    listed = ", ".join(show(c) for c in options)
    return _Validator(f"expected one of {listed}", lambda v: v in options)


def non_empty() -> _Validator:
    return _Validator("expected a non-empty value", lambda v: bool(v))


_SUBJECT = re.compile(r"^(?:[A-Za-z0-9_\-$]+|\*|>)(?:\.(?:[A-Za-z0-9_\-$]+|\*|>))*$")


def _is_subject(v: object) -> bool:
    if not isinstance(v, str) or not _SUBJECT.match(v):
        return False
    parts = v.split(".")
    return ">" not in parts[:-1]


def subject_pattern() -> _Validator:
    """A NATS subject or wildcard pattern (``*`` one token, ``>`` the rest, last only)."""
    return _Validator(
        'expected a NATS subject like "xy.src.tick.>" '
        '(tokens separated by ".", "*" or a final ">")',
        _is_subject,
    )


def subject_patterns() -> _Validator:
    return _Validator(
        'expected a non-empty list of NATS subjects like ["xy.src.tick.>"]',
        lambda v: isinstance(v, list | tuple) and len(v) > 0 and all(_is_subject(s) for s in v),
    )


def expected_of(validator: object) -> str | None:
    """What a field's validator expects, for type errors reported before the validator runs."""
    if isinstance(validator, _Validator):
        return validator.expected
    inner = getattr(validator, "_validators", None)  # attrs.validators.and_
    if inner:
        for v in inner:
            found = expected_of(v)
            if found:
                return found
    return None
