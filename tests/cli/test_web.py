"""``conveyor web`` (conveyor.cli.web): refuses to start without a login, and serves the
dashboard from a real process that stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

from click.testing import CliRunner
from support import PYTHON, python_env
from support.web import TOKEN, free_port

from conveyor.cli import main


def test_web_refuses_to_start_without_credentials(redis_url: str) -> None:
    result = CliRunner().invoke(
        main, ["--redis-url", redis_url, "web", "--port", "1"], env={"CONVEYOR_WEB_TOKEN": ""}
    )
    assert result.exit_code != 0
    assert "--allow-anonymous" in result.output


def test_web_serves_the_api_from_a_real_process(redis_url: str, r: object) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-m", "conveyor.cli", "--redis-url", redis_url, "web", "--port", str(port)],
        env=python_env(CONVEYOR_WEB_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as answer:
                    assert answer.read() == b"ok"
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "conveyor web did not start within 20s"
                time.sleep(0.1)
        request = urllib.request.Request(
            base + "/api/stats", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.loads(answer.read())["processed"] == 0
        try:
            urllib.request.urlopen(base + "/api/stats", timeout=5)
            raise AssertionError("the API answered without a token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0].decode()
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert TOKEN not in output, "the token is never logged"
