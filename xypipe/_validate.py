"""Validators for stage configs, with messages an operator can act on.

Every validator knows how to say what it *expected*, so a wrong type and a wrong value produce the
same sentence: ``interval_ms: expected an integer 1..1000, got "fast"``.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any, TypeGuard

import attrs

from xypipe._errors import CFG_INVALID_VALUE, XyError


def show(value: object) -> str:
    """Render a config value the way it would be written in TOML/JSON."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


class Invalid(XyError, ValueError):
    """A config value is wrong. ``field`` is the attribute name, ``expected`` says what fits.

    A ``ValueError`` too, so code that validates with plain Python idioms catches it."""

    code = CFG_INVALID_VALUE

    def __init__(self, field: str, expected: str, got: object, *, hint: str = "") -> None:
        self.field = field
        self.expected = expected
        self.got = got
        #: Appended after the value, e.g. ``; did you mean "json"?``.
        self.hint = hint
        super().__init__(f"{field}: {expected}, got {show(got)}{hint}")


@attrs.frozen
class _Validator:
    expected: str
    check: Callable[[object], bool]
    #: What to add after a refused value (a did-you-mean), or nothing.
    hint: Callable[[object], str] = lambda _: ""

    # attrs types a validator by its field's type; ours serve fields of every type.
    def __call__(self, inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and attribute.default is None:
            return
        if not self.check(value):
            raise Invalid(attribute.name, self.expected, value, hint=self.hint(value))


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def in_range(lo: float, hi: float) -> _Validator:
    """An integer (when both bounds are ints) or a number within ``lo..hi`` inclusive."""
    if isinstance(lo, int) and isinstance(hi, int):
        return _Validator(f"expected an integer {lo}..{hi}", lambda v: _is_int(v) and lo <= v <= hi)
    return _Validator(
        f"expected a number {lo:g}..{hi:g}", lambda v: _is_number(v) and lo <= v <= hi
    )


def count_or(word: str, lo: int, hi: int) -> _Validator:
    """An integer ``lo..hi`` or the string ``word`` (``workers = 4`` or ``workers = "auto"``)."""
    return _Validator(f"expected an integer {lo}..{hi} or {show(word)}",
                      lambda v: v == word or (_is_int(v) and lo <= v <= hi),
                      lambda v: did_you_mean(v, [word]))


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``; did you mean "x"?`` for the closest of ``choices`` to a mistyped ``word``, or ""."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {show(close[0])}?" if close else ""


def one_of(choices: Iterable[str]) -> _Validator:
    options = tuple(choices)
    listed = ", ".join(show(c) for c in options)
    return _Validator(f"expected one of {listed}", lambda v: v in options,
                      lambda v: did_you_mean(v, options))


def non_empty() -> _Validator:
    return _Validator("expected a non-empty value", lambda v: bool(v))


# Names are checked with ``fullmatch`` (never ``match`` with ``$``, which also accepts a trailing
# newline), in ASCII only: a Unicode look-alike or a stray space is refused, not normalised.
_SUBJECT = re.compile(r"(?:[A-Za-z0-9_\-$]+|\*|>)(?:\.(?:[A-Za-z0-9_\-$]+|\*|>))*")
_SUBJECT_CHAR = re.compile(r"[A-Za-z0-9_\-$.*>]")
#: One NATS subject token made of letters, digits, ``_`` or ``-`` (groups become one).
_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")
_TOKEN_CHAR = re.compile(r"[A-Za-z0-9_\-]")
#: A group name as clients, flags and configs spell it: one token of at most 64 characters.
GROUP_MAX = 64


def _char(ch: str) -> str:
    name = unicodedata.name(ch, "") or {"\n": "LINE FEED", "\r": "CARRIAGE RETURN",
                                       "\t": "TAB", "\x00": "NUL"}.get(ch, "control character")
    return f"{ch!r} (U+{ord(ch):04X} {name})"


def name_problem(value: object, allowed: re.Pattern[str], max_len: int | None = None
                 ) -> str | None:
    """What is wrong with a name checked against the one-character class ``allowed``, as a
    phrase to append to an "expected ..." message; ``None`` when every character fits."""
    if not isinstance(value, str):
        return f"got {type(value).__name__} {show(value)}, not a string"
    if not value:
        return "got an empty string"
    if max_len is not None and len(value) > max_len:
        return f"got {len(value)} characters"
    for i, ch in enumerate(value):
        if not allowed.fullmatch(ch):
            return f"found {_char(ch)} at position {i}"
    return None


def is_subject_token(v: object) -> bool:
    """A single NATS subject token of letters, digits, ``_`` or ``-``."""
    return isinstance(v, str) and _TOKEN.fullmatch(v) is not None


def token_problem(v: object) -> str | None:
    return None if is_subject_token(v) else name_problem(v, _TOKEN_CHAR)


def is_group_name(v: object) -> bool:
    """A group name: a subject token of 1..64 characters."""
    return is_subject_token(v) and len(str(v)) <= GROUP_MAX


def group_problem(v: object) -> str | None:
    """``None`` for a valid group name, else what is wrong (for an error message)."""
    return None if is_group_name(v) else name_problem(v, _TOKEN_CHAR, GROUP_MAX)


def subject_problem(v: object) -> str | None:
    """``None`` for a valid subject or pattern, else what is wrong (for an error message)."""
    if _is_subject(v):
        return None
    return name_problem(v, _SUBJECT_CHAR) or "tokens must be non-empty and '>' only last"


def _is_subject(v: object) -> bool:
    if not isinstance(v, str) or _SUBJECT.fullmatch(v) is None:
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
