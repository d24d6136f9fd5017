"""``conveyor automation``: workflow settings checks (the run, status and nodes commands come
with the workflow engine)."""

from __future__ import annotations

import click

from conveyor.automation import AutomationSettingsError, load_automation_settings


@click.group()
def automation() -> None:
    """Automation workflows (functions.backend.automation in the settings JSON file)."""


@automation.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Validate FILE's automation settings: every problem with the JSON path of its field.

    Exits 1 when there are problems; warnings (e.g. a playbook not found here) do not fail.
    """
    try:
        settings = load_automation_settings(file)
    except AutomationSettingsError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        count = len(exc.problems)
        click.echo(f"{file}: {count} problem{'s' if count != 1 else ''}", err=True)
        raise SystemExit(1) from None
    for warning in settings.warnings:
        click.echo(f"warning: {warning}", err=True)
    state = "enabled" if settings.meta.enable else "disabled (meta.enable is false)"
    click.echo(
        f"ok: {len(settings.workflows)} workflow(s) "
        f"[{', '.join(settings.names)}], automation {state}"
    )
