"""A local nats-server runs Go code on one thread unless ``SWITCHBOARD_NATS_GOMAXPROCS`` says otherwise, as
nats-server itself reports it (``/varz``: ``gomaxprocs``); a bad value is refused with the variable's name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from switchboard.local.nats_cluster import NatsCluster
from switchboard.local.nats_server import GOMAXPROCS_ENV, NatsServer


def reported_threads(tmp_path: Path) -> set[int]:
    """``gomaxprocs`` as each node of a local 3-node cluster reports it (a single server has no monitor port)."""
    with NatsCluster(tmp_path / "nats", 3) as cluster:
        answers = [cluster.monitor(i, "/varz") for i in range(3)]
    assert [status for status, _ in answers] == [200] * 3
    return {int(varz["gomaxprocs"]) for _, varz in answers}


def test_by_default_nats_server_runs_go_on_one_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GOMAXPROCS_ENV, raising=False)
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    assert reported_threads(tmp_path) == {1}


def test_zero_leaves_the_choice_to_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GOMAXPROCS_ENV, "0")
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    assert reported_threads(tmp_path) == {len(os.sched_getaffinity(0))}


def test_a_number_is_taken_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GOMAXPROCS_ENV, "3")
    assert reported_threads(tmp_path) == {3}


def test_the_single_server_gets_the_same_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GOMAXPROCS_ENV, "2")
    with NatsServer(tmp_path / "nats") as server:
        assert server.proc is not None
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"GOMAXPROCS=2" in environ


@pytest.mark.parametrize("bad", ["one", "-1", "1.5"])
def test_a_bad_value_is_refused_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(GOMAXPROCS_ENV, bad)
    with pytest.raises(ValueError, match=GOMAXPROCS_ENV):
        NatsServer(tmp_path / "nats").start()
