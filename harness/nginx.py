"""A real nginx (the Debian package) on 127.0.0.1, configured from docker/nginx's template.

The template is rendered as the nginx image renders it (envsubst of the listed variables only)
and wrapped in a minimal main config whose paths are all inside the test's folder; nginx runs in
the foreground as its own process group and is stopped by its PID."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness.processes import DOCKER, binary, free_port

TEMPLATE = DOCKER / "nginx" / "hydrarec.conf.template"
VARIABLES = ("NGINX_PORT", "NGINX_RESOLVER", "HYDRAREC_UPSTREAM", "NGINX_MAX_BODY_BYTES")


def render(values: dict[str, str]) -> str:
    """The template with `values` substituted: every variable it names must be given, and only
    those (nginx's own `$variables` stay as they are)."""
    text = TEMPLATE.read_text()
    named = set(re.findall(r"\$\{(\w+)\}", text))
    assert named == set(VARIABLES), named ^ set(VARIABLES)
    assert set(values) == named, set(values) ^ named
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    return text


def upstream(ports: Sequence[int]) -> str:
    """Server lines for replicas on 127.0.0.1 (the compose file's, without `resolve`, which
    the Debian nginx 1.22 does not have: their addresses never change here)."""
    return " ".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in ports)


def main_config(folder: Path, included: Path) -> Path:
    """A main nginx.conf whose every path is inside `folder`, including `included`."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / sub).mkdir(exist_ok=True)
    temp = "".join(
        f"    {sub}_temp_path {folder / sub};\n" for sub in ("proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root its workers would be nobody's
    path = folder / "nginx.conf"
    path.write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} warn;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {folder / 'body'};\n{temp}"
        f"    include {included};\n"
        "}\n"
    )
    return path


def check(config: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of a main config."""
    return subprocess.run(
        [binary("nginx"), "-t", "-p", str(folder), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextmanager
def running_nginx(
    folder: Path, ports: Sequence[int], max_body_bytes: int = 1_048_576
) -> Iterator[str]:
    """nginx in front of the replicas on `ports`; its base URL."""
    port = free_port()
    site = folder / "hydrarec.conf"
    site.write_text(
        render(
            {
                "NGINX_PORT": f"127.0.0.1:{port}",
                "NGINX_RESOLVER": "127.0.0.1",
                "HYDRAREC_UPSTREAM": upstream(ports),
                "NGINX_MAX_BODY_BYTES": str(max_body_bytes),
            }
        )
    )
    config = main_config(folder, site)
    tested = check(config, folder)
    assert tested.returncode == 0, tested.stderr
    process = subprocess.Popen(
        [binary("nginx"), "-p", str(folder), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (folder / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        for sig in (signal.SIGQUIT, signal.SIGKILL):  # graceful, then certain
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=5)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
