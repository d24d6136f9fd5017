"""The web dashboard, its JSON API and Prometheus ``/metrics`` (SPEC WEB-1, WEB-2).

>>> from conveyor.web import create_app, WebSettings
>>> app = create_app(Settings.load(), WebSettings(token=os.environ["TOKEN"]))  # doctest: +SKIP

Serve it with ``conveyor web`` (uvicorn), or mount it in your own ASGI application.
Everything it shows comes from the data API (:mod:`conveyor.api`) and the features' read APIs.
"""

from conveyor.web.app import create_app
from conveyor.web.config import WebSettings, redact_url
from conveyor.web.extension import WEB_EXTENSIONS, NavItem, WebContext, WebExtension, context_of

__all__ = [
    "WEB_EXTENSIONS",
    "NavItem",
    "WebContext",
    "WebExtension",
    "WebSettings",
    "context_of",
    "create_app",
    "redact_url",
]
