"""Type expressions read at run time: does what one stage gives fit what the next one takes?

Stages declare what they take and give as ordinary type expressions (``Stage[Restore | Batch,
list[DeltaOut], Cfg]``); the config loader compares neighbours with :func:`fits`. It covers the
subset stages use, with the rules mypy applies to them:

* classes by subclassing; ``object`` takes anything; ``Never`` is nothing;
* unions: every member offered must fit, an expected union is met by any member;
* generic containers (``list[X]``, ``tuple[X, ...]``, ``dict[K, V]``) by origin, then their
  arguments (read-only use: covariant); a bare ``list`` is ``list`` of anything;
* Protocol classes structurally: the offered class has every member;
* type variables bind to what is offered (within their bound), so a pass-through stage
  ``Stage[T, T, Cfg]`` gives what its upstream gives;
* :class:`Unchecked` (a stage that declares no types) fits either way, as in gradual typing.

A third-party checker (beartype's ``is_subhint``) would answer the same question for more
forms; this subset is what pipelines need, in about a hundred lines, with messages written for
operators (:func:`describe`).
"""

from __future__ import annotations

import typing
from typing import Never, TypeVar

__all__ = ["Unchecked", "describe", "fits", "substitute"]

_UnionType = type(int | str)
#: A binding of type variables to what was offered for them.
Bindings = dict[object, object]


class Unchecked:
    """The input or output type of a stage that declares none (``class S(Stage)``): fits
    anything, like an unannotated function in gradual typing. Typed stages are checked."""


def _is_union(hint: object) -> bool:
    return typing.get_origin(hint) in (typing.Union, _UnionType)


def _is_protocol(cls: object) -> bool:
    return isinstance(cls, type) and bool(getattr(cls, "_is_protocol", False))


def _protocol_members(proto: type) -> set[str]:
    names: set[str] = set()
    for klass in proto.__mro__:
        if klass in (object, typing.Generic) or klass.__name__ == "Protocol":
            continue
        names.update(getattr(klass, "__annotations__", {}))
        names.update(n for n in vars(klass) if not n.startswith("_"))
    return names


def _has_members(cls: type, names: set[str]) -> bool:
    annotated: set[str] = set()
    for klass in cls.__mro__:
        annotated.update(getattr(klass, "__annotations__", {}))
    return all(hasattr(cls, n) or n in annotated for n in names)


def substitute(hint: object, bind: Bindings) -> object:
    """``hint`` with its type variables replaced as ``bind`` says (unbound ones kept)."""
    if isinstance(hint, TypeVar):
        return bind.get(hint, hint)
    args = typing.get_args(hint)
    if not args:
        return hint
    new = tuple(substitute(a, bind) for a in args)
    origin = typing.get_origin(hint)
    if _is_union(hint):
        return typing.Union[new]  # noqa: UP007 (built from a tuple at run time)
    if isinstance(origin, type) and hasattr(origin, "__class_getitem__"):
        return origin.__class_getitem__(new[0] if len(new) == 1 else new)
    return hint


def fits(offered: object, expected: object, bind: Bindings | None = None) -> bool:
    """Whether a value of type ``offered`` is always acceptable where ``expected`` is taken.

    Type variables of ``expected`` are bound in ``bind`` (when given) to what they matched.
    """
    bind = {} if bind is None else bind
    if isinstance(offered, TypeVar):  # unbound upstream: what its bound allows, or anything
        offered = offered.__bound__ if offered.__bound__ is not None else Unchecked
    if offered is Unchecked or expected is Unchecked or expected is object:
        return True
    if isinstance(expected, TypeVar):
        if expected in bind:
            return fits(offered, bind[expected])
        if expected.__bound__ is not None and not fits(offered, expected.__bound__):
            return False
        if expected.__constraints__ and not any(fits(offered, c)
                                                for c in expected.__constraints__):
            return False
        bind[expected] = offered
        return True
    if offered is Never:
        return True  # nothing is ever offered
    if _is_union(offered):
        return all(fits(o, expected, bind) for o in typing.get_args(offered))
    if _is_union(expected):
        for option in typing.get_args(expected):
            trial = dict(bind)
            if fits(offered, option, trial):
                bind.update(trial)
                return True
        return False
    if expected is Never:
        return False
    o_origin = typing.get_origin(offered) or offered
    e_origin = typing.get_origin(expected) or expected
    if not isinstance(o_origin, type) or not isinstance(e_origin, type):
        return offered == expected
    if _is_protocol(e_origin):
        return _has_members(o_origin, _protocol_members(e_origin))
    if not issubclass(o_origin, e_origin):
        return False
    e_args, o_args = typing.get_args(expected), typing.get_args(offered)
    if not e_args or not o_args:
        return True  # a bare container: of anything
    if e_origin is tuple and len(e_args) == 2 and e_args[1] is Ellipsis:
        items = o_args[:1] if len(o_args) == 2 and o_args[1] is Ellipsis else o_args
        return all(fits(o, e_args[0], bind) for o in items)
    if len(e_args) != len(o_args):
        return False
    return all(fits(o, e, bind) for o, e in zip(o_args, e_args, strict=True))


def describe(hint: object) -> str:
    """A type expression as an operator reads it: ``Restore | Batch``, ``list[DeltaOut]``."""
    if hint is Unchecked:
        return "anything (undeclared)"
    if hint is object:
        return "anything"
    if hint is Never:
        return "nothing"
    if isinstance(hint, TypeVar):
        return describe(hint.__bound__) if hint.__bound__ is not None else "anything"
    if _is_union(hint):
        return " | ".join(describe(a) for a in typing.get_args(hint))
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if args and isinstance(origin, type):
        shown = ", ".join("..." if a is Ellipsis else describe(a) for a in args)
        return f"{origin.__name__}[{shown}]"
    if isinstance(hint, type):
        return hint.__name__
    return repr(hint)
