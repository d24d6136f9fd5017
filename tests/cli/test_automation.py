from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from support import ROOT

from conveyor.cli import main

EXAMPLE = ROOT / "examples" / "automation" / "settings.json"


def test_check_accepts_the_example() -> None:
    result = CliRunner().invoke(main, ["automation", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 1 workflow(s) [migrate_tmpimg], automation enabled")


def test_check_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    data = json.loads(EXAMPLE.read_text())
    section = data["functions"]["backend"]["automation"]
    workflow = section["workflows"][0]
    workflow["steps"]["execute"]["timeout"] = "fast"
    workflow["throttling"]["cpu"]["deactive"] = 120
    section["workflows"].append({"name": "second", "stepz": {}})
    file = tmp_path / "settings.json"
    file.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["automation", "check", str(file)])
    assert result.exit_code == 1
    w = "functions.backend.automation.workflows"
    assert result.output.splitlines() == [
        f'error: {w}[0].steps.execute.timeout: must be a positive number, got "fast"',
        f"error: {w}[0].throttling.cpu.deactive: must be between 0 and 100, got 120",
        f'error: {w}[1].stepz: unknown field; did you mean "steps"?',
        f"error: {w}[1].steps: missing; must be a JSON object",
        f"{file}: 4 problems",
    ]


def test_check_warns_but_passes(tmp_path: Path) -> None:
    data = json.loads(EXAMPLE.read_text())
    data["functions"]["backend"]["automation"]["meta"]["enable"] = False
    cpu = data["functions"]["backend"]["automation"]["workflows"][0]["throttling"]["cpu"]
    cpu["reactive"] = 75
    file = tmp_path / "settings.json"  # playbooks are relative to the file: none exist here
    file.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["automation", "check", str(file)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "ok: 1 workflow(s) [migrate_tmpimg], automation disabled (meta.enable is false)" in lines
    assert lines[-1].startswith("lease: migrate_tmpimg: redis lease")
    warnings = [x for x in lines if x.startswith("warning: ")]
    assert len(warnings) == 4  # three playbooks not found, one reactive replaced
    assert any("using 2/3 of deactive: 40" in x for x in warnings)


def test_check_unreadable_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["automation", "check", str(tmp_path / "missing.json")])
    assert result.exit_code == 1
    assert "error: cannot read the file" in result.output
