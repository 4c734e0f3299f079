"""SIGTERM on a real server process (model in its own process): /ready turns 503, a request that
still arrives on a keep-alive connection is answered with `Connection: close`, the request in
flight finishes, the process exits 0 once its clients are gone."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(url: str, body: dict[str, Any] | None = None, timeout: float = 60) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(condition: Callable[[], bool], *, what: str, seconds: float = 30) -> None:
    """Poll an observable condition until it holds; fail at the deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def requests_in_handler(base: str) -> float:
    """API requests the server is answering now, from /metrics (a scrape is not one of them)."""
    for line in call(f"{base}/metrics")[1].splitlines():
        if line.startswith("kuberank_inference_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("kuberank_inference_requests_in_flight is not exported")


def test_sigterm_drains_in_flight_requests_and_exits_zero(
    tmp_path: Path, bert_cross_encoder_dir: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kuberank_inference",
                "--model",
                str(bert_cross_encoder_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--model-process",
                "on",
                "--device-handshake-file",
                str(tmp_path / "device.json"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the server never became ready"
            try:
                if call(f"{base}/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        # a request in flight: its headers and half its body are in when the signal comes
        body = json.dumps({"query": "q", "texts": ["alpha beta", "gamma"]}).encode()
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=60)
        in_flight.sendall(
            b"POST /rerank HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body[:10]
        )
        # the server has taken the request in once its handler waits for the rest of the body
        wait_for(lambda: requests_in_handler(base) == 1, what="the request reaching its handler")
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: call(f"{base}/ready")[0] == 503, what="/ready turning 503")
        ready = call(f"{base}/ready")
        # a keep-alive client (HTTP/1.1, no Connection header) still reaching this replica
        late = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        late.request(
            "POST", "/rerank", json.dumps({"query": "q", "texts": ["late"]}),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        late_answer = late.getresponse()
        late_status, late_body = late_answer.status, late_answer.read()
        late_connection = late_answer.getheader("Connection")
        late.close()
        in_flight.sendall(body[10:])
        answer = b""
        while chunk := in_flight.recv(65536):
            answer += chunk
        in_flight.close()
        exit_code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert ready[0] == 503, log_path.read_text()
    assert json.loads(ready[1])["error_type"] == "Unhealthy"
    assert (late_status, late_connection) == (200, "close"), late_body
    assert [r["index"] for r in json.loads(late_body)] == [0]
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    assert sorted(r["index"] for r in json.loads(payload)) == [0, 1]
    assert exit_code == 0, log_path.read_text()
    assert "stopped" in log_path.read_text()
