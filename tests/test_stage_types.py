"""What a stage class declares (types, config, requirements), and how neighbours are matched."""

from __future__ import annotations

from typing import Never, Protocol, TypeVar

import attrs
import pytest

import xypipe
from xypipe import PluginError, Shared, SharedValues
from xypipe._hints import Unchecked, describe, fits
from xypipe._registry import check_stage_class
from xypipe.abc import Msg

T = TypeVar("T")
C = TypeVar("C")
N = TypeVar("N", bound=int)


@attrs.frozen
class Cfg:
    x: int = 1


@attrs.frozen
class OtherCfg:
    y: int = 2


class Source(xypipe.Stage[Never, int, Cfg]):
    async def run(self) -> None:
        await self.outbox.send(self.config.x)


class Sink(xypipe.Stage[object, Never, xypipe.NoConfig]):
    async def run(self) -> None:
        async for _ in self.inbox:
            pass


class PassThrough(xypipe.Stage[T, T, C]):
    async def run(self) -> None:
        async for x in self.inbox:
            await self.outbox.send(x)


class IntPassThrough(PassThrough[int, Cfg]):
    pass


class Untyped(xypipe.Stage):  # type: ignore[type-arg]
    Config = Cfg

    async def run(self) -> None:
        pass


def test_the_type_arguments_give_config_direction_and_types() -> None:
    assert Source.Config is Cfg and (Source.consumes, Source.produces) == (False, True)
    assert Sink.Config is xypipe.NoConfig and (Sink.consumes, Sink.produces) == (True, False)
    assert (Source.types.takes, Source.types.gives) == (Never, int)


def test_a_generic_stage_is_resolved_through_its_subclass_arguments() -> None:
    assert (IntPassThrough.types.takes, IntPassThrough.types.gives) == (int, int)
    assert IntPassThrough.Config is Cfg
    assert check_stage_class(IntPassThrough, "test") is IntPassThrough


def test_an_untyped_stage_declares_nothing_and_fits_anywhere() -> None:
    assert Untyped.types.takes is Unchecked and Untyped.types.gives is Unchecked
    assert check_stage_class(Untyped, "test") is Untyped
    assert fits(Unchecked, int) and fits(str, Unchecked)


def test_a_config_that_disagrees_with_the_type_arguments_is_refused() -> None:
    class Confused(xypipe.Stage[int, Never, Cfg]):
        Config = OtherCfg

        async def run(self) -> None:
            pass

    with pytest.raises(PluginError) as info:
        check_stage_class(Confused, "reference 'x:Confused'")
    assert info.value.code == "XY-PLG-100"
    assert "Confused.Config is OtherCfg, but its Stage[...] arguments declare the config Cfg" in (
        str(info.value))


def test_an_unknown_requirement_is_refused() -> None:
    class Greedy(xypipe.Stage[int, Never, Cfg]):
        requires = frozenset({"nats", "gpu"})  # type: ignore[arg-type]

        async def run(self) -> None:
            pass

    with pytest.raises(PluginError, match="requires names gpu; expected some of nats, http"
                       ) as info:
        check_stage_class(Greedy, "test")
    assert info.value.code == "XY-PLG-101"


def test_a_class_that_is_not_a_stage_subclass_is_refused() -> None:
    class Duck:
        Config = Cfg

        async def run(self) -> None:
            pass

    with pytest.raises(PluginError, match=r"Duck must subclass xypipe\.Stage"):
        check_stage_class(Duck, "test")


class Subjected(Protocol):
    @property
    def subject(self) -> str: ...


@pytest.mark.parametrize(("offered", "expected", "ok"), [
    (int, int, True),
    (bool, int, True),
    (int, bool, False),
    (int, object, True),
    (int | str, int, False),
    (int, int | str, True),
    (int | str, str | int | None, True),
    (list[int], list[int | str], True),
    (list[str], list[int], False),
    (list, list[int], True),
    (tuple[int, ...], tuple[int | str, ...], True),
    (tuple[int, str], tuple[int | str, ...], True),
    (dict[str, int], dict[str, str], False),
    (Msg, Subjected, True),
    (int, Subjected, False),
    (list[Msg], Subjected | list[Subjected], True),
    (int, N, True),
    (str, N, False),
    (Never, int, True),
    (int, Never, False),
])
def test_fits(offered: object, expected: object, ok: bool) -> None:
    assert fits(offered, expected) is ok


def test_a_type_variable_binds_to_what_it_is_given() -> None:
    bind: dict[object, object] = {}
    assert fits(list[Msg], list[T], bind)
    assert bind == {T: Msg}


def test_types_are_described_as_an_operator_reads_them() -> None:
    assert describe(int | list[Msg]) == "int | list[Msg]"
    assert describe(tuple[int, ...]) == "tuple[int, ...]"
    assert describe(Never) == "nothing" and describe(object) == "anything"
    assert describe(N) == "int" and describe(T) == "anything"


def test_shared_values_are_one_per_key_and_typed_by_it() -> None:
    shared = SharedValues()
    runs = Shared("runs", lambda: [0])
    other = Shared("runs", lambda: [10])  # same name, another key: another value
    shared.get(runs)[0] += 1
    assert shared.get(runs) == [1] and shared.get(other) == [10]
    assert shared.names() == ["runs", "runs"]
