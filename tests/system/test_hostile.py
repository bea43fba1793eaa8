"""Hand-written hostile input the fuzzer will not produce, against the real server: each gets
its documented 4xx (or a 200 for odd but valid ids), and the server keeps serving."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from harness.processes import Service, running_service

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("hostile")
    settings = {"HYDRAREC_WORKERS": "1", "HYDRAREC_BODY_TIMEOUT_SECONDS": "1"}
    with running_service(folder, **settings) as service:
        yield service
        assert service.process.poll() is None, "the server died"
        assert httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200


def raw(service: Service, head: bytes, body: bytes = b"", pause_s: float = 0.0) -> bytes:
    """Send a request by hand (optionally stalling after the head); the status line + body."""
    port = int(service.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head + body)
        time.sleep(pause_s)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.split(b"\r\n\r\n", 1)[1].endswith(b"}"):
                break
    return data


def post(service: Service, content: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(f"{service.url}/predict", content=content, headers=headers, timeout=30)


def test_a_huge_declared_body_is_refused_before_it_is_sent(live: Service) -> None:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    answer = raw(live, head, b'{"user_id": ')  # 100 MB announced, a few bytes sent
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"HYDRAREC_MAX_BODY_BYTES" in answer


def test_a_client_that_trickles_its_body_gets_408(live: Service) -> None:
    body = b'{"user_id": "1", "candidates": ["1"]}'
    head = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    answer = raw(live, head, body[:5], pause_s=1.5)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"HYDRAREC_BODY_TIMEOUT_SECONDS" in answer


def test_deeply_nested_json(live: Service) -> None:
    response = post(live, b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "body"


def test_a_hundred_thousand_candidates(live: Service) -> None:
    body = {"user_id": "1", "candidates": [str(i) for i in range(100_000)]}
    response = post(live, json.dumps(body).encode())
    assert response.status_code == 422
    assert "HYDRAREC_MAX_CANDIDATES" in response.json()["message"]


def test_ids_of_ten_thousand_characters(live: Service) -> None:
    body = {"user_id": "u" * 10_000, "history": ["h" * 10_000], "candidates": ["c" * 10_000]}
    response = post(live, json.dumps(body).encode())
    assert response.status_code == 422
    fields = {f["field"] for f in response.json()["fields"]}
    assert fields == {"user_id", "history[0]", "candidates[0]"}


def test_unicode_and_control_characters_are_just_unknown_ids(live: Service) -> None:
    odd = ["\u0000nul", "tab\there", "new\nline", "\u202eright-to-left", "emoji \U0001f600", "é"]
    body = {"user_id": odd[0], "history": odd[1:3], "candidates": odd}
    response = post(live, json.dumps(body).encode())
    assert response.status_code == 200
    out = response.json()
    assert out["unknown"]["user_id"] is True
    assert out["unknown"]["candidates"] == odd
    assert {i["item_id"] for i in out["items"]} == set(odd)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers(live: Service, literal: bytes) -> None:
    body = b'{"user_id": "1", "candidates": ["1"], "weights": {"click": ' + literal + b"}}"
    response = post(live, body)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "weights.click"


def test_invalid_utf8(live: Service) -> None:
    response = post(live, b'{"user_id": "\xff\xfe", "candidates": ["1"]}')
    assert response.status_code == 422


def test_the_log_holds_no_request_content(live: Service) -> None:
    log = live.output()
    assert "uuuuuuuuuu" not in log
    assert "right-to-left" not in log
