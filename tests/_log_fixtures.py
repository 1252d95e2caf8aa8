"""Logs in tests: a test's folded repeats are summarised before the test ends, so a summary
never lands in the stderr another test captures (xypipe/_log_repeats.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xypipe._log import flush_repeats


@pytest.fixture(autouse=True)
def repeats_summarised_per_test() -> Iterator[None]:
    yield
    flush_repeats(all_open=True)
