"""Every name check is a full match: a trailing newline, a stray space, an empty string or a
Unicode look-alike is refused with a message that says which character is wrong and where."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gw_support import Keys

from xypipe._errors import AuthError
from xypipe._gateway._acl import valid_pattern
from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._flags import DISABLED_GROUPS, FlagError, validate
from xypipe._gateway._session import Send, Session, SessionPolicy
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER
from xypipe._stages._md_common import is_token
from xypipe._stages.conflate import ConflateConfig
from xypipe._stages.shard import ShardConfig
from xypipe._validate import Invalid, group_problem, is_group_name, subject_problem
from xypipe.contracts import ClientFrame, ErrorCode, GroupRef, Hello, Subscribe

WALL = 1_900_000_000.0

#: (near-miss of "fx", what the message must point at)
NEAR_MISSES = [
    ("fx\n", "LINE FEED"),
    ("fx\r\n", "CARRIAGE RETURN"),
    ("\nfx", "position 0"),
    ("fx ", "SPACE"),
    (" fx", "position 0"),
    ("fx\t", "TAB"),
    ("fx\x00", "NUL"),
    ("", "empty"),
    ("f\u0445", "CYRILLIC SMALL LETTER HA"),          # looks like "fx"
    ("\uff46\uff58", "FULLWIDTH LATIN SMALL LETTER F"),
    ("fx\u200b", "ZERO WIDTH SPACE"),
    ("f" * 65, "65 characters"),
]
IDS = [repr(v)[:12] for v, _ in NEAR_MISSES]


def _session_refusal(keys: Keys, group: str) -> str:
    v = TokenVerifier(keys.public_path.read_bytes(), issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    s = Session("s1", v, SessionPolicy(), now=0.0)
    s.receive(0.1, WALL, ClientFrame(hello=Hello(token=keys.token("ann", now=WALL))
                                     ).SerializeToString())
    s.take_effects()
    s.receive(0.2, WALL, ClientFrame(subscribe=Subscribe(groups=[GroupRef(group=group)]))
              .SerializeToString())
    errors = [e.frame.error for e in s.take_effects()
              if isinstance(e, Send) and e.frame.HasField("error")]
    assert [e.code for e in errors] == [ErrorCode.ERROR_CODE_UNKNOWN_GROUP]
    assert group not in s.groups
    return errors[0].message


def _flag_refusal(group: str) -> str:
    with pytest.raises(FlagError) as exc:
        validate(DISABLED_GROUPS, ["ok", group])
    return str(exc.value)


def _config_refusal(build: Callable[[str], object], group: str) -> str:
    with pytest.raises(Invalid) as exc:
        build(group)
    return str(exc.value)


@pytest.mark.parametrize(("value", "pointer"), NEAR_MISSES, ids=IDS)
def test_group_name_checks_refuse_near_misses_with_a_clear_message(
    keys: Keys, value: str, pointer: str
) -> None:
    assert not is_group_name(value)
    assert not is_token(value) or len(value) > 64
    messages = {
        "validate": f"group name: {group_problem(value)}",
        "session subscribe": _session_refusal(keys, value),
        "feature flag": _flag_refusal(value),
        "shard default_group": _config_refusal(lambda g: ShardConfig(default_group=g), value),
        "conflate priorities": _config_refusal(
            lambda g: ConflateConfig(priorities={g: "high"}), value),
    }
    for where, message in messages.items():
        assert pointer in message, f"{where}: {message!r} does not point at {pointer!r}"
        assert "expected" in message or where == "validate", f"{where}: {message!r}"


@pytest.mark.parametrize(("value", "pointer"), NEAR_MISSES[:-1], ids=IDS[:-1])
def test_subject_checks_refuse_near_misses(keys: Keys, value: str, pointer: str) -> None:
    subject = f"xy.md.{value}" if value else ""
    assert not valid_pattern(subject)
    problem = subject_problem(subject)
    assert problem is not None
    if value:
        assert "position 6" in problem or ("position" not in pointer and pointer in problem)
    with pytest.raises(Invalid) as exc:
        ShardConfig(prefix=subject)
    assert "expected a NATS subject" in str(exc.value)
    # A token whose ACL claim carries such a pattern is refused as a whole.
    v = TokenVerifier(keys.public_path.read_bytes(), issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    with pytest.raises(AuthError, match="expected a list of NATS subject patterns"):
        v.verify(keys.token("ann", allow=[subject], now=WALL), WALL)


@pytest.mark.parametrize("good", ["fx", "FX_1", "a-b", "f" * 64])
def test_valid_group_names_still_pass(keys: Keys, good: str) -> None:
    assert is_group_name(good) and group_problem(good) is None
    assert validate(DISABLED_GROUPS, [good]) == [good]
    assert subject_problem(f"xy.md.tick.{good}") is None
