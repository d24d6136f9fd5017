"""OpenTelemetry tracing (conveyor.features.otel) with the SDK's in-memory exporter, a real
Redis and a real worker: the producer's trace continues in the worker's spans, across a retry."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support import run_burst

from conveyor import App
from conveyor.features import otel


@pytest.fixture
def traced(app: App) -> tuple[App, InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.install(app, tracer_provider=provider)
    return app, exporter, provider


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_a_trace_started_in_the_producer_continues_in_the_worker_across_a_retry(
    traced: tuple[App, InMemorySpanExporter, TracerProvider], r: redis.Redis
) -> None:
    """Must show (issue 19)."""
    app, exporter, provider = traced
    tracer = provider.get_tracer("test")
    attempts: list[str] = []

    @app.job()
    def deliver(user_id: int) -> None:
        with tracer.start_as_current_span("render template"):
            attempts.append("x")
        if len(attempts) == 1:
            raise RuntimeError("SMTP busy")

    with tracer.start_as_current_span("POST /signup") as request:
        result = deliver.perform_async(7)
    trace_id = request.get_span_context().trace_id

    run_burst(app)  # attempt 1 fails: the job goes to the retry set, its context kept
    [retrying] = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert retrying["trace_context"]["traceparent"].split("-")[1] == f"{trace_id:032x}"
    app.store.promote("retry", [(raw, "default", raw) for raw in r.zrange("retry", 0, -1)])
    run_burst(app)  # attempt 2 succeeds
    assert len(attempts) == 2

    spans = exporter.get_finished_spans()
    [send] = by_name(spans, "send default")
    processes = by_name(spans, "process default")
    assert len(processes) == 2
    assert {s.context.trace_id for s in spans} == {trace_id}, "one trace, producer to worker"
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert send.kind is SpanKind.PRODUCER
    for span in processes:
        assert span.kind is SpanKind.CONSUMER
        assert span.parent is not None and span.parent.span_id == send.context.span_id
        assert [link.context.span_id for link in span.links] == [send.context.span_id]
    first, second = sorted(processes, key=lambda s: s.start_time or 0)
    assert first.status.status_code is StatusCode.ERROR
    assert first.events[0].name == "exception"
    assert second.status.status_code is StatusCode.UNSET
    assert second.attributes is not None and second.attributes["conveyor.job.retry_count"] == 1
    renders = by_name(spans, "render template")
    assert sorted(s.parent.span_id for s in renders if s.parent) == sorted(
        s.context.span_id for s in processes
    ), "spans made in perform nest under its process span"
    assert send.attributes == {
        "messaging.system": "conveyor",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "default",
        "messaging.message.id": result.jid,
        "conveyor.job.class": "deliver",
    }, "no job arguments in the attributes"


def test_async_enqueue_is_traced_the_same_way(
    traced: tuple[App, InMemorySpanExporter, TracerProvider], r: redis.Redis
) -> None:
    app, exporter, provider = traced
    tracer = provider.get_tracer("test")

    @app.job()
    def ping(n: int) -> None: ...

    async def main() -> int:
        try:
            with tracer.start_as_current_span("GET /ping") as request:
                await ping.aperform_async(1)
            return request.get_span_context().trace_id
        finally:
            await app.aclose()

    trace_id = asyncio.run(main())
    run_burst(app)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans if s.context.trace_id == trace_id] == [
        "send default",
        "GET /ping",
        "process default",
    ]


def test_a_job_enqueued_without_a_trace_starts_its_own(
    traced: tuple[App, InMemorySpanExporter, TracerProvider], r: redis.Redis
) -> None:
    app, exporter, _ = traced

    @app.job()
    def lonely() -> None: ...

    assert trace.get_current_span() is trace.INVALID_SPAN
    lonely.perform_async()
    r.lpush("queue:default", json.dumps({"class": "lonely", "args": [], "jid": "ruby-made"}))
    run_burst(app)
    processes = by_name(exporter.get_finished_spans(), "process default")
    assert len(processes) == 2
    ruby = [
        s for s in processes if s.attributes and s.attributes["messaging.message.id"] == "ruby-made"
    ]
    assert ruby[0].parent is None and ruby[0].links == (), "no context in the payload: a new trace"
