"""``conveyor web``: serve the dashboard, JSON API and /metrics with uvicorn."""

from __future__ import annotations

import logging
from typing import Any

import click

from conveyor import logs
from conveyor.cli.common import CliState, pass_state
from conveyor.cli.worker import load_app

log = logging.getLogger("conveyor.cli")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7433, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token", envvar="CONVEYOR_WEB_TOKEN", help="Bearer/login token. [env CONVEYOR_WEB_TOKEN]"
)
@click.option("--user", envvar="CONVEYOR_WEB_USER", help="Login user. [env CONVEYOR_WEB_USER]")
@click.option(
    "--password",
    envvar="CONVEYOR_WEB_PASSWORD",
    help="Login password (prefer the environment). [env CONVEYOR_WEB_PASSWORD]",
)
@click.option(
    "--allow-anonymous", is_flag=True, default=None, help="Let anyone in without logging in."
)
@click.option(
    "--public-metrics", is_flag=True, default=None, help="Serve /metrics without a login."
)
@click.option(
    "--secure-cookies", is_flag=True, default=None, help="Session cookie only over HTTPS."
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
    state: CliState, /, host: str, port: int, spec: str | None, log_level: str, **auth: Any
) -> None:
    """Serve the web dashboard (queues, sets, processes, cron, flags), its JSON API and
    Prometheus /metrics. Needs --token or --user/--password unless --allow-anonymous.

    Example: CONVEYOR_WEB_TOKEN=$(openssl rand -hex 16) conveyor web --port 7433
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
    web_settings = WebSettings.load(app.settings, **auth)
    asgi = create_app(app, web_settings)
    # One format for Conveyor's and uvicorn's lines, scrubbed (docs/logging.md); uvicorn's
    # own logging config would give its loggers handlers of their own.
    logs.configure(app.settings)
    where = f"http://{host}:{port}/"
    click.echo(f"Conveyor dashboard on {where} (Ctrl-C stops)", err=True)
    try:
        uvicorn.run(
            asgi,
            host=host,
            port=port,
            log_level=log_level.lower(),
            log_config=None,
            ws="none",
            proxy_headers=False,
            server_header=False,
        )
    finally:
        app.close()
