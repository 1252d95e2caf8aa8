"""The authentication throttle's core, fed plain numbers: no clock, no socket."""

from __future__ import annotations

import pytest
from gw_support import Keys
from hypothesis import given
from hypothesis import strategies as st

from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._session import (
    Audit,
    AuthLockedOut,
    AuthThrottled,
    Close,
    ProtocolViolation,
    Send,
    Session,
    SessionPolicy,
)
from xypipe._gateway._throttle import AuthThrottle, ThrottlePolicy, client_address
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER
from xypipe._validate import Invalid
from xypipe.contracts import ClientFrame, ErrorCode, Hello

WALL = 1_900_000_000.0

POLICY = ThrottlePolicy(max_failures=3, window_s=10, lockout_s=2, max_lockout_s=7, forget_s=100,
                        max_addresses=4)


def fail(t: AuthThrottle, addr: str, times: list[float], reason: str = "invalid"):  # type: ignore[no-untyped-def]
    return [t.failure(addr, now, reason) for now in times]


def test_failures_within_the_window_lock_the_address_and_refusals_say_how_long() -> None:
    t = AuthThrottle(POLICY)
    assert fail(t, "a", [0.0, 1.0])[-1] is None
    assert t.check("a", 1.5).allowed
    lock = t.failure("a", 2.0, "expired")
    assert lock is not None
    assert (lock.address, lock.failures, lock.lockout_s, lock.strike) == ("a", 3, 2.0, 1)
    assert lock.reasons == (("invalid", 2), ("expired", 1))
    v = t.check("a", 3.0)
    assert not v.allowed and v.retry_after_s == pytest.approx(1.0)
    assert t.check("b", 3.0).allowed  # other addresses are not affected
    assert t.check("a", 4.0).allowed  # the lockout is over


def test_failures_spread_wider_than_the_window_never_lock() -> None:
    t = AuthThrottle(POLICY)
    assert all(lock is None for lock in fail(t, "a", [0.0, 6.0, 12.0, 18.0, 24.0, 30.0]))
    assert t.check("a", 31.0).allowed


def test_each_further_lockout_doubles_up_to_the_cap_and_is_forgotten_later() -> None:
    t = AuthThrottle(POLICY)
    durations = []
    now = 0.0
    for _ in range(4):
        lock = fail(t, "a", [now, now, now])[-1]
        assert lock is not None
        durations.append(lock.lockout_s)
        # attempts during the lockout are refused and reported with the next lockout
        assert not t.check("a", now + 0.5).allowed
        now += lock.lockout_s
    assert durations == [2.0, 4.0, 7.0, 7.0]
    lock = fail(t, "a", [now, now, now])[-1]
    assert lock is not None and lock.refused_before == 1
    # quiet for longer than forget_s after the lockout: back to the first step
    later = now + lock.lockout_s + 101
    lock = fail(t, "a", [later] * 3)[-1]
    assert lock is not None and lock.strike == 1 and lock.lockout_s == 2.0


def test_a_success_clears_the_failures() -> None:
    t = AuthThrottle(POLICY)
    fail(t, "a", [0.0, 1.0])
    t.success("a", 2.0)
    assert fail(t, "a", [3.0, 4.0])[-1] is None


def test_failures_during_a_lockout_do_not_extend_or_repeat_it() -> None:
    t = AuthThrottle(POLICY)
    locks = [x for x in fail(t, "a", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]) if x is not None]
    assert len(locks) == 1  # one summary per lockout, not one per attempt
    assert t.check("a", 2.2).allowed


def test_disabled_policy_never_locks() -> None:
    t = AuthThrottle(ThrottlePolicy(max_failures=0))
    assert all(x is None for x in fail(t, "a", [0.0] * 50))
    assert t.check("a", 0.0).allowed


@given(st.lists(st.tuples(st.integers(0, 10_000), st.floats(0, 1000)), max_size=300))
def test_memory_stays_bounded_whatever_the_addresses(events: list[tuple[int, float]]) -> None:
    t = AuthThrottle(POLICY)
    now = 0.0
    for addr, dt in events:
        now += dt
        t.failure(f"10.0.{addr // 256}.{addr % 256}", now, "invalid")
        assert t.statistics(now).addresses <= POLICY.max_addresses


def test_a_flood_of_new_addresses_evicts_the_least_recently_active_first() -> None:
    t = AuthThrottle(POLICY)
    fail(t, "victim", [0.0, 0.0, 0.0])  # locked until 2.0
    for i in range(3):
        t.failure(f"x{i}", 0.1, "invalid")
    assert not t.check("victim", 0.5).allowed  # touched: now the most recent
    t.failure("x3", 0.6, "invalid")  # table full: x0 goes, not the victim
    assert not t.check("victim", 0.7).allowed
    assert t.statistics(0.7).evicted == 1


@pytest.mark.parametrize(("peer", "address"), [
    ("10.1.2.3:5555", "10.1.2.3"),
    ("2001:db8:1:2:aaaa::1:443", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9:80", "2001:db8:1:2::/64"),
    ("::ffff:10.1.2.3:80", "10.1.2.3"),
    ("::1:1234", "::/64"),
    ("", "(unknown)"),
])
def test_client_address_keys_ipv4_by_host_and_ipv6_by_its_64(peer: str, address: str) -> None:
    assert client_address(peer) == address


def test_policy_refuses_a_cap_below_the_first_lockout() -> None:
    with pytest.raises(Invalid, match="max_lockout_s: expected at least lockout_s"):
        ThrottlePolicy(lockout_s=10, max_lockout_s=5)


def test_session_core_refuses_a_locked_out_hello_unchecked_with_4007(keys: Keys) -> None:
    throttle = AuthThrottle(POLICY)
    v = TokenVerifier(keys.public_path.read_bytes(), issuer=DEV_ISSUER, audience=DEV_AUDIENCE)

    def hello(now: float, token: str) -> list[object]:
        s = Session(f"s{now}", v, SessionPolicy(), now, throttle=throttle, address="10.0.0.9")
        s.receive(now, WALL, ClientFrame(hello=Hello(token=token)).SerializeToString())
        return list(s.take_effects())

    locks = [e for now in (1.0, 2.0, 3.0) for e in hello(now, "forged")
             if isinstance(e, AuthLockedOut)]
    assert len(locks) == 1 and locks[0].lockout.address == "10.0.0.9"
    effects = hello(3.5, keys.token(now=WALL))  # a valid token, refused without a look
    assert [type(e) for e in effects] == [AuthThrottled, Send, Close]
    assert effects[2].code == 4000 + ErrorCode.ERROR_CODE_RATE_LIMITED  # type: ignore[attr-defined]
    assert not any(isinstance(e, ProtocolViolation) for e in effects)
    assert any(isinstance(e, Audit) and e.outcome == "allowed"
               for e in hello(5.5, keys.token(now=WALL)))  # lockout over
