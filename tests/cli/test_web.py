"""``conveyor web`` (conveyor.cli.web): refuses to start without a login or with unsafe
settings (secrets on the command line, anonymous off loopback, weak credentials), and serves
the dashboard from a real process that stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from support import PYTHON, StartProcess, python_env
from support.web import TOKEN, free_port, start_web

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


def test_secrets_on_the_command_line_are_refused(redis_url: str) -> None:
    for option in ("--token", "--password"):
        result = CliRunner().invoke(
            main, ["--redis-url", redis_url, "web", option, "Zq-S3cret-value-0000"]
        )
        assert result.exit_code == 2
        assert "every user of this machine can read it" in result.output
        assert "Zq-S3cret-value-0000" not in result.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--allow-anonymous", "--host", "0.0.0.0"], {}, "only on a loopback address"),
        (["--host", "0.0.0.0"], {"CONVEYOR_WEB_TOKEN": TOKEN}, "--allowed-host"),
        ([], {"CONVEYOR_WEB_TOKEN": " " * 20}, "must not be blank"),
        ([], {"CONVEYOR_WEB_TOKEN": "password1234"}, "openssl rand -hex 32"),
        (["--user", "ops"], {"CONVEYOR_WEB_PASSWORD": "hunter2"}, "use at least 12"),
    ],
)
def test_unsafe_settings_stop_the_start(
    redis_url: str, args: list[str], env: dict[str, str], message: str
) -> None:
    env = {"CONVEYOR_WEB_TOKEN": "", "CONVEYOR_WEB_PASSWORD": "", **env}
    result = CliRunner().invoke(main, ["--redis-url", redis_url, "web", *args], env=env)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_ps_never_shows_the_token(
    processes: StartProcess, redis_url: str, r: object, tmp_path: Path
) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    proc, base = start_web(processes, redis_url, "--token-file", str(secret), CONVEYOR_WEB_TOKEN="")
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    assert str(proc.pid) in ps.stdout and TOKEN not in ps.stdout
    assert TOKEN not in " ".join(psutil.Process(proc.pid).cmdline())
    request = urllib.request.Request(
        base + "/api/stats", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def test_anonymous_mode_on_loopback_from_the_cli(
    processes: StartProcess, redis_url: str, r: object
) -> None:
    _, base = start_web(processes, redis_url, "--allow-anonymous", CONVEYOR_WEB_TOKEN="")
    with urllib.request.urlopen(base + "/api/stats", timeout=10) as answer:
        assert json.loads(answer.read())["processed"] == 0
