"""``conveyor web``: serve the dashboard, JSON API and /metrics with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from conveyor import logs
from conveyor.cli.common import CliState, pass_state
from conveyor.cli.worker import load_app

log = logging.getLogger("conveyor.cli")

#: Secrets given on the command line are refused: every local user can read them (``ps``).
_ON_COMMAND_LINE = (
    "{option} puts the {what} on the command line, where every user of this machine can read "
    "it (ps, /proc); set {env} in the environment or use {option}-file instead"
)


def _refuse_on_command_line(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        option, what = ("--token", "token") if param.name == "token" else ("--password", "password")
        env = "CONVEYOR_WEB_TOKEN" if what == "token" else "CONVEYOR_WEB_PASSWORD"
        raise click.BadParameter(_ON_COMMAND_LINE.format(option=option, what=what, env=env))


def _read_secret(path: str | None, what: str) -> str | None:
    """The first line of a secret file (``--token-file``); ``None`` without one."""
    if path is None:
        return None
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].strip():
        raise click.BadParameter(f"{path} holds no {what} (it is empty)")
    return lines[0].strip()


@click.command()
@click.option(
    "--host",
    default=None,
    help="Address to listen on. [default: 127.0.0.1; env CONVEYOR_WEB_HOST]",
)
@click.option("--port", default=7433, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A Host name clients use to reach the dashboard (repeatable). Default: the --host "
    "address, plus localhost names on a loopback address. [env CONVEYOR_WEB_ALLOWED_HOSTS]",
)
@click.option("--token", expose_value=False, hidden=True, callback=_refuse_on_command_line)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the Bearer/login token. [or env CONVEYOR_WEB_TOKEN]",
)
@click.option("--user", envvar="CONVEYOR_WEB_USER", help="Login user. [env CONVEYOR_WEB_USER]")
@click.option("--password", expose_value=False, hidden=True, callback=_refuse_on_command_line)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the login password. [or env CONVEYOR_WEB_PASSWORD]",
)
@click.option(
    "--allow-anonymous",
    is_flag=True,
    default=None,
    help="Let anyone on this machine in without logging in (loopback --host only).",
)
@click.option(
    "--public-metrics", is_flag=True, default=None, help="Serve /metrics without a login."
)
@click.option(
    "--secure-cookies", is_flag=True, default=None, help="Session cookie only over HTTPS."
)
@click.option(
    "--max-body",
    type=click.IntRange(1),
    default=None,
    help="Largest request body in bytes. [default: 1048576; env CONVEYOR_WEB_MAX_BODY]",
)
@click.option(
    "--log-client-ip",
    is_flag=True,
    default=None,
    help="Write client addresses in the access log (personal data; off by default).",
)
@click.option(
    "-r", "--require", "spec", help="App module: show its declared jobs and web extensions."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@pass_state
def web(
    state: CliState,
    /,
    *,
    port: int,
    spec: str | None,
    log_level: str,
    token_file: str | None,
    password_file: str | None,
    allowed_hosts: tuple[str, ...],
    **options: Any,
) -> None:
    """Serve the web dashboard (queues, sets, processes, cron, flags), its JSON API and
    Prometheus /metrics. Needs a token (CONVEYOR_WEB_TOKEN or --token-file) or a user and
    password (--user and CONVEYOR_WEB_PASSWORD or --password-file), unless --allow-anonymous
    on a loopback address.

    Example: CONVEYOR_WEB_TOKEN=$(openssl rand -hex 32) conveyor web --port 7433
    """
    import uvicorn

    from conveyor.features import App
    from conveyor.web import WebSettings, create_app

    settings = state.settings()
    if spec:
        app = load_app(spec)
        app.configure(app.settings.replace(**state.overrides()))
    else:
        app = App(settings)
    web_settings = WebSettings.load(
        app.settings,
        token=_read_secret(token_file, "token"),
        password=_read_secret(password_file, "password"),
        allowed_hosts=allowed_hosts or None,
        **options,
    )
    asgi = create_app(app, web_settings)
    # One format for Conveyor's and uvicorn's lines, scrubbed (docs/logging.md); uvicorn's
    # own logging config would give its loggers handlers of their own.
    logs.configure(app.settings)
    host = web_settings.host
    where = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    click.echo(f"Conveyor dashboard on {where} (Ctrl-C stops)", err=True)
    try:
        uvicorn.run(
            asgi,
            host=host,
            port=port,
            log_level=log_level.lower(),
            log_config=None,
            # The dashboard writes its own access log: route templates, no client address.
            access_log=False,
            ws="none",
            proxy_headers=False,
            server_header=False,
        )
    finally:
        app.close()
