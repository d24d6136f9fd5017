"""Run one workflow step on this node: a real ``ansible-playbook`` or a ``python:module:function``
callable, each in a child process of its own session, with a timeout that kills the whole tree.

What a step receives and gives back:

- **Variables** arrive as Ansible extra vars, so they win over everything a playbook sets itself:
  the operator's (``variables``: settings and engine values) as JSON in one temp file, the
  caller's data (``data``: request and task-line strings) as ``!unsafe`` values in a YAML file,
  so Ansible never templates them (``{{ lookup('pipe', ...) }}`` stays a string). A Python
  callable gets both merged into one ``dict`` of plain values. Failure messages have the
  caller's values redacted.
- **Facts**: an Ansible step gets the extra var ``conveyor_result_path`` (a fresh temp file) and
  may write a JSON object there; a Python callable returns a JSON object (or ``None``). Either way
  the object becomes :attr:`StepResult.facts` (the engine sums ``src_size``/``dest_size`` from it).
- **Timeout**: ``SIGTERM`` to the child's process group (its session), then ``SIGKILL`` after
  ``grace`` seconds. Descendants that left the group (``setsid``) are found with psutil before the
  first signal and get the same treatment, so nothing the step started survives it. A step owns
  its processes: the same clean-up runs after a normal exit, so a forgotten ``cmd &`` cannot
  outlive the step either.

>>> from conveyor.automation import Playbook
>>> result = run_step(Playbook.parse("site.yml"), {"src": "/tmp/a"}, timeout=60,
...                   base_dir="/etc/conveyor")                       # doctest: +SKIP
>>> result.ok, result.facts                                           # doctest: +SKIP
(True, {'src_size': 1024})
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from conveyor.automation.children import OWNER_ENV, owner_tag, reaper_argv
from conveyor.automation.settings import Playbook
from conveyor.automation.variables import redact, unsafe_yaml

#: At most this much of the combined stdout+stderr is kept (the tail: errors come last).
OUTPUT_LIMIT = 64 * 1024
#: The extra var naming the file an Ansible step may write its facts to.
RESULT_VAR = "conveyor_result_path"
#: Environment that keeps Ansible runs fast, quiet and the same on every node; the caller's
#: ``env`` wins over it.
ANSIBLE_ENV = {
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_NOCOWS": "1",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_FORCE_COLOR": "0",
    "ANSIBLE_LOCALHOST_WARNING": "False",
    "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
    "ANSIBLE_DEPRECATION_WARNINGS": "False",
    "ANSIBLE_SYSTEM_WARNINGS": "False",
    # Facts are gathered only by playbooks that ask (gather_facts: true): seconds saved per task.
    "ANSIBLE_GATHERING": "explicit",
    "ANSIBLE_HOST_KEY_CHECKING": "False",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class StepResult:
    """How one step run ended."""

    ok: bool
    #: The child's exit status; ``None`` when it was killed on timeout.
    returncode: int | None
    timed_out: bool
    #: Wall-clock seconds from start to the end of the clean-up.
    duration: float
    #: The tail of the combined stdout+stderr, at most :data:`OUTPUT_LIMIT` bytes.
    output: str
    #: The JSON object the step reported, ``{}`` if none.
    facts: dict[str, Any] = field(default_factory=dict)
    #: A short message when not ok (or when the facts could not be read).
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "ok": self.ok,
            "returncode": self.returncode,
            "timed_out": self.timed_out,
            "duration": self.duration,
            "output": self.output,
            "facts": self.facts,
            "error": self.error,
        }


@dataclass(frozen=True)
class _Exit:
    returncode: int | None
    timed_out: bool


def run_step(
    playbook: Playbook,
    variables: Mapping[str, Any],
    *,
    timeout: float,
    base_dir: str | None = None,
    grace: float = 5.0,
    env: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
) -> StepResult:
    """Run ``playbook`` with the operator's ``variables`` and the caller's ``data`` and wait at
    most ``timeout`` seconds.

    ``data`` (request and task-line values) is never templated by Ansible; its names must not
    repeat a name of ``variables`` (the engine refuses such requests before). Relative playbook
    paths resolve against ``base_dir`` (the settings file's directory), which is also the
    child's working directory and, for Python steps, first on ``sys.path``. ``env`` is added to
    this process's environment. Never raises for what the step does: a missing playbook, a
    failing task, an exception or a timeout are all a :class:`StepResult` with ``ok=False``.
    """
    data = dict(data or {})
    clash = sorted(set(data) & set(variables))
    if clash:
        raise ValueError(f"caller data may not repeat operator variables: {', '.join(clash)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="conveyor-step-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        if playbook.kind == "python":
            merged = {**variables, **data}
            argv, stdin, missing = _python_argv(playbook, merged, result_path, base_dir)
        else:
            argv, stdin, missing = _ansible_argv(
                playbook, variables, data, result_path=result_path, base_dir=base_dir, tmp=tmp
            )
        if missing:
            return StepResult(False, None, False, time.monotonic() - started, "", {}, missing)
        child_env = _environment(playbook, tmp, env)
        cwd = os.path.abspath(base_dir) if base_dir and os.path.isdir(base_dir) else tmp
        log_path = os.path.join(tmp, "output.log")
        with open(log_path, "w+b") as log:
            end = _supervise(
                argv, stdin, cwd=cwd, env=child_env, log=log, timeout=timeout, grace=grace
            )
            output = _tail(log)
        facts, error = _read_result(playbook, result_path)
    duration = time.monotonic() - started
    if end.timed_out:
        return StepResult(
            False,
            None,
            True,
            duration,
            output,
            facts,
            f"timed out after {timeout:g}s; the step's processes were killed",
        )
    ok = end.returncode == 0 and not (playbook.kind == "python" and error is not None)
    if end.returncode != 0 and error is None:
        error = _failure_message(playbook, end.returncode, output)
    # The message goes to logs and run records: a caller's values stay out of it.
    error = redact(error, data.values())
    return StepResult(ok, end.returncode, False, duration, output, facts, error)


def _ansible_argv(
    playbook: Playbook,
    variables: Mapping[str, Any],
    data: Mapping[str, str],
    *,
    result_path: str,
    base_dir: str | None,
    tmp: str,
) -> tuple[list[str], bytes, str | None]:
    path = Path(playbook.path or "")
    if not path.is_absolute() and base_dir:
        path = Path(base_dir) / path
    # Absolute: the child runs in base_dir, where a relative base_dir would be read twice.
    path = path.absolute()
    if not path.is_file():
        return [], b"", f"playbook {str(path)!r} not found on this node"
    binary = shutil.which("ansible-playbook")
    if binary is None:
        return [], b"", "ansible-playbook is not on PATH; install ansible-core on this node"
    vars_file = os.path.join(tmp, "vars.json")
    with open(vars_file, "w", encoding="utf-8") as f:
        json.dump({**variables, RESULT_VAR: result_path}, f, default=str)
    # Caller data in a file of its own, every value !unsafe: Ansible's own way to say "a string,
    # never a template" (ansible-core 2.19's data tagging keeps it untrusted, derived values too).
    data_file = os.path.join(tmp, "data.yml")
    with open(data_file, "w", encoding="utf-8") as f:
        f.write(unsafe_yaml(data))
    argv = [binary, "-i", "localhost,", "-c", "local", "-e", f"@{vars_file}"]
    argv += ["-e", f"@{data_file}", str(path)]
    return argv, b"", None


def _python_argv(
    playbook: Playbook,
    variables: Mapping[str, Any],
    result_path: str,
    base_dir: str | None,
) -> tuple[list[str], bytes, str | None]:
    target = f"{playbook.module}:{playbook.function}"
    argv = [sys.executable, "-m", "conveyor.automation._call", target, result_path]
    if base_dir:
        argv += ["--path", os.path.abspath(base_dir)]
    stdin = json.dumps(dict(variables), default=str).encode()
    return argv, stdin, None


def _environment(playbook: Playbook, tmp: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    if playbook.kind == "ansible":
        home = os.path.join(tmp, "ansible")
        env.update(ANSIBLE_ENV)
        # Modules run under the node's own Python: interpreter discovery may pick a python3.x
        # that is on PATH but broken (a version-manager shim), and differs between nodes.
        env["ANSIBLE_PYTHON_INTERPRETER"] = sys.executable
        env["ANSIBLE_HOME"] = home
        env["ANSIBLE_LOCAL_TEMP"] = os.path.join(home, "tmp")
        env["ANSIBLE_REMOTE_TEMP"] = os.path.join(home, "remote")
    else:
        env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _supervise(
    argv: list[str],
    stdin: bytes,
    *,
    cwd: str,
    env: Mapping[str, str],
    log: IO[bytes],
    timeout: float,
    grace: float,
) -> _Exit:
    child_env = dict(env)
    child_env[OWNER_ENV] = owner_tag()
    try:
        proc = subprocess.Popen(
            # Under the reaper: if this node dies, the step's group dies with it.
            reaper_argv(argv),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=child_env,
            # Its own session (and process group): one killpg reaches everything it starts.
            start_new_session=True,
        )
    except OSError as exc:
        log.write(f"cannot start {argv[0]}: {exc}\n".encode())
        return _Exit(127, False)
    try:
        proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc, grace)
        if proc.stdin is not None:
            proc.stdin.close()
        return _Exit(None, True)
    # Whatever it left behind in its group (a background `cmd &`) ends with it.
    _kill_tree(proc, grace)
    return _Exit(proc.returncode, False)


def _kill_tree(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the group and every descendant, SIGKILL what is left after ``grace``."""
    pgid = proc.pid
    try:
        # Collected before any signal: once a parent dies its children are reparented and
        # can no longer be found from it.
        tracked = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        tracked = []
    tracked += _group_members(pgid)

    def remaining() -> list[psutil.Process]:
        # The group is looked at again: a process forked while we signal joins it late.
        found = {p.pid: p for p in [*tracked, *_group_members(pgid)] if _alive(p)}
        return list(found.values())

    if proc.poll() is not None and not remaining():
        return
    _signal_all(pgid, tracked, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not remaining():
            return
        time.sleep(0.05)
    _signal_all(pgid, remaining(), signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10.0
    while (left := remaining()) and time.monotonic() < deadline:
        _signal_all(pgid, left, signal.SIGKILL)
        time.sleep(0.02)


def _group_members(pgid: int) -> list[psutil.Process]:
    """Processes still in the process group ``pgid`` (orphans included)."""
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(p.pid) == pgid and p.pid != pgid:
                out.append(p)
    return out


def _signal_all(pgid: int, processes: Iterable[psutil.Process], sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, sig)
    for p in processes:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def _alive(p: psutil.Process) -> bool:
    # A zombie is dead but stays visible until reaped (a container's PID 1 may never reap it).
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _tail(log: IO[bytes]) -> str:
    log.flush()
    size = log.seek(0, os.SEEK_END)
    log.seek(max(0, size - OUTPUT_LIMIT))
    data = log.read(OUTPUT_LIMIT)
    # Cut at a character boundary: the tail may start inside a multi-byte character.
    return data.decode("utf-8", errors="replace").lstrip("\ufffd")


def _read_result(playbook: Playbook, path: str) -> tuple[dict[str, Any], str | None]:
    """The facts in the result file and a problem with them (``None`` if fine)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"cannot read the step's result file: {exc}"
    if not text.strip():
        return {}, None
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {}, f"the step wrote facts that are not valid JSON ({exc}); facts ignored"
    if playbook.kind == "python":
        return _python_result(data)
    if not isinstance(data, dict):
        return {}, f"the step wrote {type(data).__name__} facts, not a JSON object; facts ignored"
    return data, None


def _python_result(data: Any) -> tuple[dict[str, Any], str | None]:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        return {}, f"{err.get('type', 'Exception')}: {err.get('message', '')}"
    if isinstance(data, dict) and isinstance(data.get("facts"), dict):
        return dict(data["facts"]), None
    return {}, "the Python step's result file is malformed"


def _failure_message(playbook: Playbook, returncode: int | None, output: str) -> str:
    """``ansible-playbook exited with 2: fatal: [localhost]: FAILED! ...`` (one line, short)."""
    what = "ansible-playbook" if playbook.kind == "ansible" else f"python step {playbook.raw}"
    detail = ""
    for line in reversed(output.splitlines()):
        if line.startswith(("fatal:", "ERROR!", "[ERROR]", "failed:")) or "Error" in line[:40]:
            detail = line.strip()
            break
    message = f"{what} exited with {returncode}"
    if detail:
        message += f": {detail[:300]}"
    return message
