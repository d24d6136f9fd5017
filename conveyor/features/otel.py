"""OpenTelemetry tracing (``pip install 'conveyor[otel]'``): a span per enqueue and per perform,
with the W3C trace context carried in the payload, so a trace started where a job is enqueued
(a web request) continues in the worker that runs it, retries included. See docs/tracing.md.

>>> from conveyor.features import otel
>>> otel.install(app)                      # the global tracer provider     # doctest: +SKIP
>>> otel.install(app, tracer_provider=provider)                             # doctest: +SKIP

Spans follow OpenTelemetry's messaging conventions: ``send <queue>`` (kind PRODUCER) around
the push, ``process <queue>`` (kind CONSUMER) around ``perform``, with ``messaging.system``,
``messaging.operation.name``/``.type``, ``messaging.destination.name`` (the queue) and
``messaging.message.id`` (the jid). The process span's parent is the producer's span, and it
also links to it. Job arguments never become attributes (they may hold personal data).

The context travels in the payload field ``trace_context`` (``{"traceparent": ...,
"tracestate": ...}``): Sidekiq ignores fields it does not know, and a retry keeps the payload's
fields, so every attempt of a job joins the trace of its enqueue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.core.job import Job
from conveyor.core.middleware import (
    ClientMiddleware,
    EnqueueContext,
    JobContext,
    ServerMiddleware,
)
from conveyor.errors import ConfigurationError

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigurationError(
        "conveyor.features.otel needs OpenTelemetry: pip install 'conveyor[otel]'"
    ) from exc

if TYPE_CHECKING:
    from conveyor.core.app import App

#: The payload field holding the W3C trace context (ignored by Sidekiq, kept across retries).
FIELD = "trace_context"
#: ``messaging.system``: the instrumentation's system name.
SYSTEM = "conveyor"

_PROPAGATOR = TraceContextTextMapPropagator()
_SPAN = "_otel_span"
_TOKEN = "otel_token"


def _attributes(job: Mapping[str, Any], operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": str(job.get("queue") or "default"),
        "messaging.message.id": str(job.get("jid", "")),
        "conveyor.job.class": str(job.get("class", "")),
    }
    count = job.get("retry_count")
    if isinstance(count, int) and not isinstance(count, bool):
        attributes["conveyor.job.retry_count"] = count + 1
    return attributes


class TracingClientMiddleware(ClientMiddleware):
    """A ``send`` span per enqueue; writes the span's context into the payload."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def applies_to(self, job_class: type[Job] | None) -> bool:
        return True

    def before_enqueue(self, ctx: EnqueueContext) -> None:
        queue = str(ctx.job.get("queue") or "default")
        span = self.tracer.start_span(
            f"send {queue}", kind=SpanKind.PRODUCER, attributes=_attributes(ctx.job, "send")
        )
        if ctx.at is not None:
            span.set_attribute("conveyor.job.scheduled_at", ctx.at)
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        ctx.job[FIELD] = carrier
        ctx.info[_SPAN] = span

    def after_enqueue(self, ctx: EnqueueContext) -> None:
        span = ctx.info.pop(_SPAN, None)
        if span is None:
            return
        if ctx.dropped is not None:
            span.set_attribute("conveyor.job.dropped", ctx.dropped)
        span.end()


class TracingServerMiddleware(ServerMiddleware):
    """A ``process`` span around ``perform``, child of the enqueue's span; current while
    ``perform`` runs, so spans the job makes nest under it."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def before_perform(self, ctx: JobContext) -> None:
        carrier = ctx.job.get(FIELD)
        parent = _PROPAGATOR.extract(carrier) if isinstance(carrier, dict) else None
        producer = trace.get_current_span(parent).get_span_context() if parent else None
        links = [Link(producer)] if producer is not None and producer.is_valid else []
        span = self.tracer.start_span(
            f"process {ctx.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_attributes({**ctx.job, "queue": ctx.queue}, "process"),
            links=links,
        )
        ctx.state[_SPAN] = span
        ctx.state[_TOKEN] = otel_context.attach(trace.set_span_in_context(span))

    def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
        span = ctx.state.pop(_SPAN, None)
        token = ctx.state.pop(_TOKEN, None)
        if token is not None:
            otel_context.detach(token)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        elif ctx.skipped is not None:
            span.set_attribute("conveyor.job.skipped", ctx.skipped)
        span.end()


def install(app: App, *, tracer_provider: TracerProvider | None = None) -> None:
    """Trace every enqueue and every perform of ``app`` (producers and workers both install
    it). The tracing middleware run first, so their spans cover the other middleware."""
    tracer = trace.get_tracer("conveyor", tracer_provider=tracer_provider)
    app.client_middleware.prepend(TracingClientMiddleware(tracer))
    app.server_middleware.prepend(TracingServerMiddleware(tracer))
