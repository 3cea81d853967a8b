"""System fixtures: the whole system as real processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchboard.local.stack import Stack

from .stacks import make_stack


@pytest.fixture(scope="session")
def retail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The retail scenario, one process per agent, shared by tests that only add sessions."""
    with make_stack(tmp_path_factory.mktemp("retail")) as stack:
        yield stack
