"""What every route of the dashboard shares (:class:`WebContext`), and how features add pages:
:class:`WebExtension`.

A feature (bulk operations, imports, automation, or your own app) contributes navigation
entries, page routes, JSON API routes, templates and Prometheus collectors with one
:class:`WebExtension`. Extensions come from ``create_app(..., extensions=[...])``, from the
app's ``extensions[WEB_EXTENSIONS]`` list (objects or ``"module:attribute"`` strings), and from the
``conveyor.web`` entry-point group of installed packages. Every non-GET route an extension
adds is behind the same authentication and CSRF checks as the built-in ones.

>>> ext = WebExtension(
...     name="reports",
...     nav=(NavItem("Reports", "/reports"),),
...     pages=(Route("/reports", reports_page),),            # doctest: +SKIP
...     api=(Route("/reports", reports_json),),              # served at /api/reports
...     templates="myapp.web:templates",
... )
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib
import importlib.metadata
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.templating import Jinja2Templates

from conveyor.api import Api
from conveyor.core.extensions import ExtensionKey
from conveyor.errors import ConfigurationError
from conveyor.features.cron import Cron
from conveyor.features.flags import Flags
from conveyor.redis.web_logins import WebAuthStore
from conveyor.web import csrf
from conveyor.web.config import WebSettings, redact_url
from conveyor.web.sessions import Logins

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from conveyor.core.app import App

ENTRY_POINT_GROUP = "conveyor.web"


@dataclass(frozen=True)
class NavItem:
    """One entry of the navigation bar; ``path`` is relative to the dashboard's root."""

    label: str
    path: str


@dataclass(frozen=True)
class WebExtension:
    """Pages, API routes, templates and metrics a feature adds to the dashboard."""

    name: str
    nav: Sequence[NavItem] = ()
    #: Routes mounted at the dashboard's root (HTML pages and their form actions).
    pages: Sequence[BaseRoute] = ()
    #: Routes mounted under ``/api``.
    api: Sequence[BaseRoute] = ()
    #: ``"package:folder"`` holding the extension's Jinja templates (they may extend
    #: ``base.html``).
    templates: str | None = None
    #: Called with the context at start; each returns a Prometheus collector for /metrics.
    collectors: Sequence[Callable[[WebContext], Collector]] = ()
    #: Path prefixes outside ``/api`` that are machine APIs too: a request without valid
    #: credentials gets a JSON 401, not a redirect to the login page (e.g. ``"/automation/"``).
    api_prefixes: Sequence[str] = ()


@dataclass
class WebContext:
    """The dashboard's state: the data API, feature read APIs, settings and templates.

    Route handlers reach it with :func:`context_of`.
    """

    api: Api
    settings: WebSettings
    templates: Jinja2Templates
    extensions: list[WebExtension] = field(default_factory=list)
    #: The store chosen under ``/stores/<name>/``; ``None`` at the root, whose overview sums
    #: every store and whose other pages show ``Settings.store``.
    store: str | None = None
    _views: dict[str, WebContext] = field(default_factory=dict, repr=False, compare=False)

    def for_store(self, name: str) -> WebContext:
        """This context over the store ``name`` (same settings, templates and extensions).
        Example: ``context_of(request).for_store("b").api.stats()``."""
        view = self._views.get(name)
        if view is None:
            view = dataclasses.replace(self, api=self.api.for_store(name), store=name, _views={})
            self._views[name] = view
        return view

    @property
    def app(self) -> App:
        """The Conveyor app (its Redis, key prefix, clock and declared jobs)."""
        return self.api.app

    @functools.cached_property
    def logins(self) -> Logins:
        """Server-side sessions and failed-login throttling (state in Redis)."""
        return Logins(WebAuthStore(self.app.store), self.settings)

    @property
    def flags(self) -> Flags:
        """Feature flags, read without the per-process cache (the page shows what is stored)."""
        return Flags(self.app, cache_ttl=0)

    @property
    def cron(self) -> Cron:
        """Cron entries."""
        return Cron(self.app, self.api.store_name)

    @property
    def nav(self) -> list[NavItem]:
        """The built-in pages, then every extension's."""
        items = list(BUILTIN_NAV)
        for extension in self.extensions:
            items += extension.nav
        return items

    def render(
        self, request: Request, template: str, status_code: int = 200, **values: Any
    ) -> Response:
        """Render ``template`` with the shared values (navigation, CSRF token, flash...)."""
        session = request.scope.get("session", {})
        flash = session.pop("flash", None) if isinstance(session, dict) else None
        base = str(request.scope.get("root_path", ""))
        context = {
            "base": base,
            **self._store_values(base),
            "title": self.settings.title,
            "nav": self.nav,
            "csrf_token": csrf.token(session) if isinstance(session, dict) else "",
            "user": request.scope.get("state", {}).get("user"),
            "flash": flash,
            "poll_ms": int(self.settings.poll_interval * 1000),
            "redis": self.app.stores.display_url(self.api.store_name)
            if self.store
            else redact_url(self.app.settings.redis_url),
            "prefix": self.app.settings.key_prefix,
            "now": self.api.now(),
            "path": request.url.path,
            **values,
        }
        return self.templates.TemplateResponse(request, template, context, status_code)

    def _store_values(self, base: str) -> dict[str, Any]:
        """What the store selector needs: the stores (none when there is one), the chosen
        one and the dashboard's root (``base`` without ``/stores/<name>``)."""
        names = self.api.store_names()
        suffix = f"{STORES_PATH}/{self.store}" if self.store else ""
        root = base[: -len(suffix)] if suffix and base.endswith(suffix) else base
        return {"stores": names if len(names) > 1 else (), "store": self.store, "root": root}


#: Every page and API route is served again under ``/stores/<name>`` for each store.
STORES_PATH = "/stores"
#: The ASGI scope key naming the store of a request served under ``/stores/<name>``.
STORE_SCOPE_KEY = "conveyor.store"

BUILTIN_NAV = (
    NavItem("Overview", "/"),
    NavItem("Busy", "/busy"),
    NavItem("Queues", "/queues"),
    NavItem("Retries", "/retries"),
    NavItem("Scheduled", "/scheduled"),
    NavItem("Dead", "/dead"),
    NavItem("Interrupted", "/interrupted"),
    NavItem("Processes", "/processes"),
    NavItem("Operations", "/operations"),
    NavItem("Cron", "/cron"),
    NavItem("Flags", "/flags"),
)


def context_of(request: Request) -> WebContext:
    """The :class:`WebContext` of the dashboard serving ``request``."""
    ctx = getattr(request.app.state, "conveyor_web", None)
    if not isinstance(ctx, WebContext):
        raise RuntimeError("this request is not served by conveyor.web.create_app()")
    store = request.scope.get(STORE_SCOPE_KEY)
    return ctx.for_store(store) if isinstance(store, str) else ctx


#: Dashboard extensions an app brings along: :class:`WebExtension` objects or
#: ``"package.module:attribute"`` names (``app.extensions[WEB_EXTENSIONS] = [...]``).
WEB_EXTENSIONS: ExtensionKey[list[WebExtension | str]] = ExtensionKey("web")


def resolve_extensions(app: App, explicit: Iterable[Any]) -> list[WebExtension]:
    """Extensions given explicitly, then the app's ``extensions[WEB_EXTENSIONS]``, then entry
    points; each name once (the first wins)."""
    found: list[WebExtension] = []
    candidates: list[Any] = [*explicit, *(app.extensions.get(WEB_EXTENSIONS) or ())]
    candidates += list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    for candidate in candidates:
        extension = _load(candidate)
        if all(e.name != extension.name for e in found):
            found.append(extension)
    return found


def _load(candidate: Any) -> WebExtension:
    if isinstance(candidate, importlib.metadata.EntryPoint):
        candidate = candidate.load()
    elif isinstance(candidate, str):
        module, _, attr = candidate.partition(":")
        try:
            candidate = getattr(importlib.import_module(module), attr or "extension")
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(
                f"web extension {candidate!r} cannot be loaded ({exc}); name it as "
                "'package.module:attribute'"
            ) from None
    if callable(candidate) and not isinstance(candidate, WebExtension):
        candidate = candidate()
    if not isinstance(candidate, WebExtension):
        raise ConfigurationError(f"web extension {candidate!r} is not a conveyor.web.WebExtension")
    return candidate


def build_templates(extensions: Sequence[WebExtension]) -> Jinja2Templates:
    """The Jinja environment: the dashboard's templates, then each extension's; autoescaped."""
    loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("conveyor.web", "templates")]
    for extension in extensions:
        if extension.templates:
            package, _, folder = extension.templates.partition(":")
            loaders.append(jinja2.PackageLoader(package, folder or "templates"))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = when
    env.filters["ago"] = ago
    env.filters["duration"] = duration
    env.filters["compact"] = compact
    return Jinja2Templates(env=env)


def when(epoch: float | None) -> str:
    """``2024-05-02 10:00:00 UTC``, or ``-``."""
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """``42s``, ``3m``, ``5h``, ``2d``.

    >>> duration(3700)
    '1h'
    """
    if seconds is None:
        return "-"
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.2f}s"


def ago(epoch: float | None, now: float) -> Markup:
    """A ``<time>`` element: ``3m ago`` / ``in 12s`` with the UTC time as its title."""
    if epoch is None:
        return Markup("-")
    delta = epoch - now
    text = f"in {duration(delta)}" if delta > 0 else f"{duration(delta)} ago"
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(when(epoch), text)


def compact(value: Any, width: int = 80) -> str:
    """``value`` as one-line JSON cut to ``width`` characters (escaped when rendered)."""
    text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"
