"""Linux-only parts of the launcher degrade elsewhere with a log line, not a crash."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from service.config import SUPERVISOR_PID
from service.server import NoDelayConfig, balanced_reuse_port, end_with_supervisor


@pytest.fixture
def macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")


def config(workers: int) -> NoDelayConfig:
    return NoDelayConfig("service.main:create_app", host="127.0.0.1", port=0, workers=workers)


@pytest.mark.usefixtures("macos")
def test_without_balanced_reuseport_the_workers_share_one_socket(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert not balanced_reuse_port()
    sockets = config(workers=3).listening_sockets()  # uvicorn's logger writes to stderr
    try:
        assert len(sockets) == 3
        assert len(set(sockets)) == 1
        assert not sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        assert "does not balance SO_REUSEPORT sockets" in capfd.readouterr().err
    finally:
        sockets[0].close()


def test_on_linux_each_worker_gets_its_own_reuseport_socket() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("SO_REUSEPORT balancing is Linux's")
    sockets = config(workers=2).listening_sockets()
    try:
        assert len(set(sockets)) == 2
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
    finally:
        for s in sockets:
            s.close()


@pytest.mark.usefixtures("macos")
def test_without_pdeathsig_a_worker_says_so_and_starts(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    config(workers=2)  # uvicorn's logging, as in a worker
    monkeypatch.setenv(SUPERVISOR_PID, str(os.getppid()))
    end_with_supervisor()  # no prctl call (it would fail off Linux), no signal to itself
    assert "no PR_SET_PDEATHSIG on darwin" in capfd.readouterr().err
