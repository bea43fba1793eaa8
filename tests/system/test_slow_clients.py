"""Slow and vanishing clients against the real server: trickled bodies cannot hold the worker."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.processes import running_service

pytestmark = pytest.mark.system

BODY = json.dumps({"user_id": "196", "history": ["242", "302"], "candidates": ["1", "50"]})
N_TRICKLING = 12  # three times the in-flight bound below
DEADLINE_S = 3


def connect(url: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=20)


def request_head(length: int) -> bytes:
    return (
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


def trickle(url: str, answers: list[bytes], stop: threading.Event) -> None:
    """Declare 1,000 bytes, send one every 0.3 s (each well within any per-chunk timer)."""
    with connect(url) as conn:
        conn.sendall(request_head(1000))
        conn.setblocking(False)
        while not stop.is_set():
            try:
                answers.append(conn.recv(4096))
                return
            except BlockingIOError:
                pass
            try:
                conn.send(b" ")
            except OSError:  # the server answered and closed
                pass
            time.sleep(0.3)


def slow_but_complete(url: str) -> bytes:
    """A real body sent in five pieces over ~1.5 s: slow, yet within the deadline."""
    body = BODY.encode()
    with connect(url) as conn:
        conn.sendall(request_head(len(body)))
        for i in range(5):
            time.sleep(0.3)
            conn.sendall(body[i * len(body) // 5 : (i + 1) * len(body) // 5])
        return conn.recv(65536)


def test_trickled_bodies_hold_no_slot_and_meet_a_deadline(tmp_path: Path) -> None:
    settings = {
        "HYDRAREC_WORKERS": "1",
        "HYDRAREC_MAX_IN_FLIGHT": "4",
        "HYDRAREC_BODY_TIMEOUT_SECONDS": str(DEADLINE_S),
    }
    with running_service(tmp_path, **settings) as service:
        answers: list[bytes] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=trickle, args=(service.url, answers, stop))
            for _ in range(N_TRICKLING)
        ]
        for t in threads:
            t.start()
        time.sleep(0.5)  # all of them connected and trickling
        try:
            # While they trickle: ordinary clients are answered, a slow complete body too
            with httpx.Client(base_url=service.url, timeout=10) as client:
                statuses = [
                    client.post(
                        "/predict", content=BODY, headers={"content-type": "application/json"}
                    ).status_code
                    for _ in range(20)
                ]
            assert statuses == [200] * 20
            assert slow_but_complete(service.url).startswith(b"HTTP/1.1 200")
            # Then: each trickler is cut off at the deadline, though it never stopped sending
            for t in threads:
                t.join(timeout=DEADLINE_S + 10)
        finally:
            stop.set()
        assert len(answers) == N_TRICKLING
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:2]
        metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
    # The upload is not latency: every /predict timed took under a second, the slow one too;
    # the cut-off ones are counted (408), not timed
    timed = {
        s.name.rsplit("_", 1)[-1] + s.labels.get("le", ""): s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "hydrarec_http_request_duration_seconds"
        for s in family.samples
        if s.labels["handler"] == "/predict" and s.labels["version"]
    }
    assert timed["count"] == 21
    assert timed["bucket1.0"] == 21
    assert 'hydrarec_predict_failures_total{reason="timeout"} 12.0' in metrics
