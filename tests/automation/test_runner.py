"""The step runner against the real ansible-playbook and real child processes."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import psutil
from support import ROOT

from conveyor.automation import Playbook, load_automation_settings, parse_task_line
from conveyor.automation.runner import OUTPUT_LIMIT, run_step

EXAMPLE = ROOT / "examples" / "automation"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _alive_with(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if marker in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def test_vars_arrive_with_their_precedence_and_facts_come_back(tmp_path: Path) -> None:
    _write(
        tmp_path / "site.yml",
        """\
        - hosts: localhost
          gather_facts: false
          vars:
            from_play: play
            c: play   # extra vars win over play vars
          tasks:
            - ansible.builtin.copy:
                dest: "{{ conveyor_result_path }}"
                content: "{{ {'a': a, 'b': b, 'c': c, 'n': n + 1, 'value': value,
                              'from_play': from_play} | to_json }}"
        """,
    )
    doc = {
        "functions": {
            "backend": {
                "automation": {
                    "workflows": [
                        {
                            "name": "w",
                            "vars": {"a": "wf", "b": "wf", "c": "wf", "n": 41},
                            "steps": {
                                "execute": {
                                    "playbook": "site.yml",
                                    "vars": {"b": "st", "c": "st"},
                                }
                            },
                        }
                    ]
                }
            }
        }
    }
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(doc))
    settings = load_automation_settings(settings_file)
    wf = settings.workflow("w")
    step = wf.steps.execute
    result = run_step(
        step.playbook,
        wf.step_vars("execute"),
        data={"value": "a/b=c;d %e ü"},
        timeout=step.timeout,
        base_dir=settings.base_dir,
    )
    assert result.ok, result.output
    assert result.returncode == 0 and not result.timed_out and result.error is None
    # workflow < step, caller data beside them, all over the playbook's own vars; types survive.
    assert result.facts == {
        "a": "wf",
        "b": "st",
        "c": "st",
        "n": 42,
        "value": "a/b=c;d %e ü",
        "from_play": "play",
    }
    assert "PLAY RECAP" in result.output
    assert result.duration > 0


def test_a_failing_task_is_not_ok_and_keeps_the_output(tmp_path: Path) -> None:
    _write(
        tmp_path / "fail.yml",
        """\
        - hosts: localhost
          gather_facts: false
          tasks:
            - ansible.builtin.fail:
                msg: "disk {{ disk }} is full"
        """,
    )
    result = run_step(
        Playbook.parse("fail.yml"), {"disk": "sdz9"}, timeout=90, base_dir=str(tmp_path)
    )
    assert not result.ok and not result.timed_out
    assert result.returncode not in (0, None)
    assert "disk sdz9 is full" in result.output
    assert result.error is not None and "disk sdz9 is full" in result.error
    assert result.facts == {}


def test_bad_facts_json_is_reported_but_does_not_change_ok(tmp_path: Path) -> None:
    _write(
        tmp_path / "bad.yml",
        """\
        - hosts: localhost
          gather_facts: false
          tasks:
            - ansible.builtin.copy:
                dest: "{{ conveyor_result_path }}"
                content: "{not json"
        """,
    )
    result = run_step(Playbook.parse("bad.yml"), {}, timeout=90, base_dir=str(tmp_path))
    assert result.ok and result.returncode == 0
    assert result.facts == {}
    assert result.error is not None and "not valid JSON" in result.error


def test_missing_playbook_is_not_ok_without_running(tmp_path: Path) -> None:
    result = run_step(Playbook.parse("nope.yml"), {}, timeout=5, base_dir=str(tmp_path))
    assert not result.ok and result.returncode is None
    assert result.error is not None and "nope.yml" in result.error


def test_timeout_kills_the_whole_playbook_tree(tmp_path: Path) -> None:
    # A unique sleep length is the marker that finds this test's processes and no others.
    marker = f"300.{uuid.uuid4().int % 10**9:09d}"
    _write(
        tmp_path / "hang.yml",
        f"""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - ansible.builtin.shell: "sleep {marker} & touch started; sleep {marker}"
              args:
                chdir: "{tmp_path}"
        """,
    )
    # Generous: under load ansible-playbook can take many seconds to reach the shell task.
    result = run_step(Playbook.parse("hang.yml"), {}, timeout=20, base_dir=str(tmp_path), grace=2)
    assert (tmp_path / "started").exists(), "the shell task never ran: nothing was tested"
    assert result.timed_out and not result.ok
    assert result.returncode is None
    assert result.error is not None and "timed out" in result.error
    assert _alive_with(marker) == []
    # By its full path: other test sessions on this machine may run this test at the same time.
    assert _alive_with(str(tmp_path / "hang.yml")) == []


def test_timeout_sigkills_what_ignores_sigterm(tmp_path: Path) -> None:
    marker = f"stubborn-{uuid.uuid4().hex}"
    (tmp_path / "stubborn.py").write_text(
        textwrap.dedent(
            f"""\
            import signal, subprocess, sys, time

            def run(variables):
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                # A grandchild in its own session: out of the group, found through psutil.
                subprocess.Popen([sys.executable, "-c",
                                  "import signal, time; signal.signal(signal.SIGTERM, "
                                  "signal.SIG_IGN); time.sleep(300)", "{marker}"],
                                 start_new_session=True)
                print("started", flush=True)
                time.sleep(300)
            """
        )
    )
    result = run_step(
        Playbook.parse("python:stubborn:run"), {}, timeout=3, base_dir=str(tmp_path), grace=1
    )
    assert result.timed_out and result.returncode is None
    assert "started" in result.output
    assert _alive_with(marker) == []


def test_python_step_returns_facts(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "__init__.py").write_text("")
    (tmp_path / "jobs" / "files.py").write_text(
        textwrap.dedent(
            """\
            import os

            def measure(variables):
                print("measuring", variables["name"])
                return {"size": len(variables["name"]), "cwd": os.getcwd()}
            """
        )
    )
    result = run_step(
        Playbook.parse("python:jobs.files:measure"),
        {"name": "abcdé"},
        timeout=60,
        base_dir=str(tmp_path),
    )
    assert result.ok, result.output
    assert result.facts == {"size": 5, "cwd": str(tmp_path)}
    assert "measuring abcdé" in result.output


def test_python_step_returning_none_has_no_facts(tmp_path: Path) -> None:
    (tmp_path / "quiet.py").write_text("def run(variables):\n    return None\n")
    result = run_step(Playbook.parse("python:quiet:run"), {}, timeout=60, base_dir=str(tmp_path))
    assert result.ok and result.facts == {} and result.error is None


def test_python_step_exception_is_not_ok_with_type_and_message(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text(
        "def run(variables):\n    raise ValueError(f\"bad input {variables['x']!r}\")\n"
    )
    result = run_step(
        Playbook.parse("python:boom:run"), {"x": 7}, timeout=60, base_dir=str(tmp_path)
    )
    assert not result.ok and result.returncode == 1 and not result.timed_out
    assert result.error == "ValueError: bad input 7"
    assert "Traceback" in result.output


def test_python_step_bad_return_and_missing_module(tmp_path: Path) -> None:
    (tmp_path / "odd.py").write_text("def run(variables):\n    return [1, 2]\n")
    odd = run_step(Playbook.parse("python:odd:run"), {}, timeout=60, base_dir=str(tmp_path))
    assert not odd.ok and odd.error is not None and odd.error.startswith("TypeError")
    missing = run_step(Playbook.parse("python:nowhere:run"), {}, timeout=60, base_dir=str(tmp_path))
    assert not missing.ok
    assert missing.error is not None and missing.error.startswith("ModuleNotFoundError")


def test_python_step_timeout_kills_its_children(tmp_path: Path) -> None:
    marker = f"pystep-{uuid.uuid4().hex}"
    (tmp_path / "slow.py").write_text(
        textwrap.dedent(
            f"""\
            import subprocess, sys, time

            def run(variables):
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                                  "{marker}"])
                time.sleep(300)
            """
        )
    )
    result = run_step(
        Playbook.parse("python:slow:run"), {}, timeout=3, base_dir=str(tmp_path), grace=2
    )
    assert result.timed_out and not result.ok and result.returncode is None
    assert _alive_with(marker) == []


def test_output_is_the_tail_and_bounded(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text(
        textwrap.dedent(
            """\
            import sys

            def run(variables):
                for i in range(20000):
                    sys.stdout.write(f"line {i:06d}\\n")
                sys.stdout.write("THE END\\n")
            """
        )
    )
    result = run_step(Playbook.parse("python:chatty:run"), {}, timeout=60, base_dir=str(tmp_path))
    assert result.ok
    assert len(result.output.encode()) <= OUTPUT_LIMIT
    assert result.output.rstrip().endswith("THE END")
    assert "line 000000" not in result.output


def test_a_background_process_does_not_outlive_a_finished_step(tmp_path: Path) -> None:
    marker = f"leftover-{uuid.uuid4().hex}"
    (tmp_path / "leak.py").write_text(
        textwrap.dedent(
            f"""\
            import subprocess, sys

            def run(variables):
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                                  "{marker}"])
                return {{"started": True}}
            """
        )
    )
    result = run_step(
        Playbook.parse("python:leak:run"), {}, timeout=60, base_dir=str(tmp_path), grace=2
    )
    assert result.ok and result.facts == {"started": True}
    assert _alive_with(marker) == []


def test_migrate_tmpimg_example_end_to_end(tmp_path: Path) -> None:
    settings = load_automation_settings(EXAMPLE / "settings.json")
    wf = settings.workflow("migrate_tmpimg")
    assert wf.steps.prepare is not None and wf.steps.complete is not None
    src, dest = tmp_path / "source", tmp_path / "dest"
    src.mkdir()
    names = {"plain.jpg": b"x" * 1000, "ü a;b=c%d e.jpg": b"y" * 20}
    for name, data in names.items():
        (src / name).write_bytes(data)
    (src / "subdir").mkdir()  # not a file: no task
    workflow_vars = {"src_dir": str(src), "dest_dir": str(dest)}
    prepare_path = tmp_path / "migrate_tmpimg-1.txt"

    prepared = run_step(
        wf.steps.prepare.playbook,
        {**wf.step_vars("prepare"), **workflow_vars, "prepare_path": str(prepare_path)},
        timeout=120,
        base_dir=settings.base_dir,
    )
    assert prepared.ok, prepared.output
    lines = [line for line in prepare_path.read_text().splitlines() if line.strip()]
    tasks = [parse_task_line(line) for line in lines]
    assert {t.workflow for t in tasks} == {"migrate_tmpimg"}
    assert sorted(t.vars["file"] for t in tasks) == sorted(names)

    facts = []
    for task in tasks:
        done = run_step(
            wf.steps.execute.playbook,
            {**wf.step_vars("execute"), **workflow_vars},
            data=task.vars,
            timeout=wf.steps.execute.timeout,
            base_dir=settings.base_dir,
        )
        assert done.ok, done.output
        facts.append(done.facts)
    assert sorted(os.listdir(dest)) == sorted(names)
    assert os.listdir(src) == ["subdir"]
    assert sorted(f["src_size"] for f in facts) == sorted(len(d) for d in names.values())

    # A task naming a path, not a file, is refused.
    escape = run_step(
        wf.steps.execute.playbook,
        workflow_vars,
        data={"file": "../outside"},
        timeout=60,
        base_dir=settings.base_dir,
    )
    assert not escape.ok and "plain file name" in escape.output

    report = tmp_path / "reports" / "report.json"
    total = sum(len(d) for d in names.values())
    completed = run_step(
        wf.steps.complete.playbook,
        {
            **wf.step_vars("complete"),
            "report_path": str(report),
            "_request_total": 3,
            "_complete_total": 2,
            "_complte_total": 2,
            "_fail_total": 1,
            "_src_size_total": total,
            "_dest_size_total": total,
        },
        timeout=wf.steps.complete.timeout,
        base_dir=settings.base_dir,
    )
    assert completed.ok, completed.output
    assert json.loads(report.read_text()) == {
        "workflow": "migrate_tmpimg",
        "request_total": 3,
        "complete_total": 2,
        "fail_total": 1,
        "src_size_total": total,
        "dest_size_total": total,
    }
