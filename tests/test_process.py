"""Child processes: awaited by several tasks at once, cancellable, signalled."""

import signal
import sys

import trio
import trio.testing

from xypipe._process import Child


async def test_several_tasks_can_wait_for_the_same_child():
    child = Child.spawn([sys.executable, "-c", "import time; time.sleep(0.3)"])
    codes: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(_collect, child, codes)
    assert codes == [0, 0, 0]


async def _collect(child: Child, codes: list[int]) -> None:
    codes.append(await child.wait())


async def test_a_cancelled_waiter_hands_over_to_the_others():
    child = Child.spawn([sys.executable, "-c", "import time; time.sleep(0.3)"])
    codes: list[int] = []
    first = trio.CancelScope()

    async def watcher() -> None:
        with first:
            await child.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher)  # holds the pidfd
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_collect, child, codes)  # waits for its turn
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()  # the watcher leaves before the child exits
    assert codes == [0]


async def test_signals_reach_the_child_and_its_status_says_so():
    child = Child.spawn([sys.executable, "-c", "import time; time.sleep(30)"])
    child.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        assert await child.wait() == -signal.SIGTERM
    assert child.returncode == -signal.SIGTERM
    child.kill()  # already gone: a no-op, not an error
