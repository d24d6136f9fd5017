"""``conveyor ops list|show|watch``: tracked bulk operations (SPEC OPS-5), over the data API."""

from __future__ import annotations

import dataclasses
import time

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from conveyor.api import (
    FailedItemRecord,
    FinishedOperationRecord,
    OperationRecord,
    OperationsApi,
)
from conveyor.cli.common import CliState, clip, console, duration, echo_json, pass_state, when
from conveyor.errors import NotFoundError
from conveyor.features.operations.operation_jobs import COMPLETION


@click.group("ops")
def ops_group() -> None:
    """Tracked bulk operations: list, show, watch, resend, dismiss."""


@ops_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ops_list(state: CliState, /, as_json: bool) -> None:
    """Running operations with their progress (finished ones are deleted)."""
    with state.api() as api:
        records = api.operations.list()
    if as_json:
        echo_json([dataclasses.asdict(r) for r in records])
        return
    if not records:
        click.echo("no bulk operations running")
        return
    now = time.time()
    table = Table("id", "type", "status", "progress", "succeeded", "failed", "created")
    for r in records:
        table.add_row(
            r.id,
            r.operation_type,
            r.status,
            f"{r.processed_items}/{r.total_items} ({r.percent:.0f}%)",
            str(r.successful_items),
            str(r.failed_items),
            when(r.created_at, now),
        )
    console().print(table)


@ops_group.command("show")
@click.argument("operation_id")
@click.option("--items", default=20, show_default=True, help="Failed items to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ops_show(state: CliState, /, operation_id: str, items: int, as_json: bool) -> None:
    """One operation: totals, progress and its failed items (ID may be a unique prefix)."""
    if items < 0:
        raise click.BadParameter(f"{items} is negative; give 0 or more", param_hint="--items")
    with state.api() as api:
        ops = api.operations
        full_id = ops.resolve(operation_id)
        record = ops.status(full_id)
        failed = ops.failed_items(full_id, 0, items) if items and record else []
    if record is None:
        raise NotFoundError(f"bulk operation {operation_id!r} finished and its totals expired")
    if as_json:
        echo_json({**dataclasses.asdict(record), "failed": [dataclasses.asdict(f) for f in failed]})
        return
    _print_record(record, failed)


def _print_record(
    record: OperationRecord | FinishedOperationRecord, failed: list[FailedItemRecord]
) -> None:
    now = time.time()
    out = console()
    table = Table("field", "value", title=f"Bulk operation {record.id}", show_header=False)
    rows = [
        ("type", record.operation_type),
        ("status", record.status),
        ("progress", f"{record.processed_items}/{record.total_items} ({record.percent:.0f}%)"),
        ("total", str(record.total_items)),
        ("succeeded", str(record.successful_items)),
        ("failed", str(record.failed_items)),
        ("created", when(record.created_at, now)),
        ("completed", when(record.completed_at, now)),
    ]
    if isinstance(record, OperationRecord):
        if record.status == "notify_failed":
            rows.append(("e-mail", f"NOT DELIVERED: {record.notify_error}"))
            rows.append(("next", f"conveyor ops resend {record.id} | ops dismiss {record.id}"))
        rows.append(("user id", record.user_id))
        rows.append(("parameters", clip(str(record.parameters), 80)))
        if record.expires_in is not None and record.expires_in >= 0:
            rows.append(("expires in", duration(record.expires_in)))
    else:
        rows.append(("finished", when(record.finished_at, now)))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    if failed:
        items = Table("type", "name", "path", "code", "error", title="Failed items")
        for f in failed:
            items.add_row(
                f.entity_type,
                f.entity_name,
                f.entity_full_path,
                f.error_code,
                clip(f.error_message, 60),
            )
        out.print(items)
        if len(failed) < record.failed_items:
            out.print(f"... {record.failed_items - len(failed)} more (use --items)")


@ops_group.command("watch")
@click.argument("operation_id")
@click.option("--interval", default=0.5, show_default=True, help="Seconds between polls.")
@click.option("--timeout", default=0.0, help="Give up after this many seconds (0: never).")
@pass_state
def ops_watch(state: CliState, /, operation_id: str, interval: float, timeout: float) -> None:
    """Draw a live progress bar until the operation finishes (exit 1 if its failure e-mail
    could not be delivered)."""
    if interval <= 0:
        raise click.BadParameter(f"{interval} must be > 0", param_hint="--interval")
    deadline = time.monotonic() + timeout if timeout > 0 else None
    with state.api() as api:
        ops = api.operations
        full_id = ops.resolve(operation_id)
        record = ops.status(full_id)
        if record is None:
            raise NotFoundError(f"bulk operation {operation_id!r} is gone (expired)")
        record = _watch(ops, full_id, record, interval=interval, deadline=deadline, timeout=timeout)
    if record.status == "notify_failed":
        assert isinstance(record, OperationRecord)
        raise click.ClickException(
            f"operation {full_id} finished ({record.successful_items} succeeded, "
            f"{record.failed_items} failed of {record.total_items}) but its failure e-mail was "
            f"not delivered: {record.notify_error}; see `conveyor ops show {full_id}`"
        )
    click.echo(
        f"operation {full_id} finished: {record.successful_items} succeeded, "
        f"{record.failed_items} failed of {record.total_items}"
    )


Record = OperationRecord | FinishedOperationRecord


def _watch(
    ops: OperationsApi,
    full_id: str,
    record: Record,
    *,
    interval: float,
    deadline: float | None,
    timeout: float,
) -> Record:
    """Poll until the operation is finished or stuck on its e-mail (notify_failed)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("failed: {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=console(),
    )
    with progress:
        task = progress.add_task(
            f"{record.operation_type} {full_id[:8]}",
            total=record.total_items,
            failed=record.failed_items,
        )
        while True:
            progress.update(
                task,
                description=f"{record.operation_type} {full_id[:8]} {_phase(record)}",
                completed=record.processed_items,
                total=record.total_items,
                failed=record.failed_items,
            )
            if record.finished or record.status == "notify_failed":
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise click.ClickException(_still(full_id, record, timeout))
            time.sleep(interval)
            latest = ops.status(full_id)
            if latest is None:
                raise click.ClickException(f"operation {full_id} disappeared (deleted)")
            record = latest


def _phase(record: Record) -> str:
    return "(sending the e-mail)" if record.status == "completed" else ""


def _still(full_id: str, record: Record, timeout: float) -> str:
    """Where a watched operation stands when the watch gives up, in words."""
    done = f"{record.processed_items}/{record.total_items}"
    if record.status == "completed":
        return (
            f"operation {full_id}: all {done} items processed; waiting for the completion job "
            f"(failure e-mail, then deletion) after {timeout:g}s: is a worker running its queue?"
        )
    return f"operation {full_id} still running after {timeout:g}s ({done})"


@ops_group.command("resend")
@click.argument("operation_id")
@click.option("-q", "--queue", default="default", show_default=True, help="Queue of the job.")
@pass_state
def ops_resend(state: CliState, /, operation_id: str, queue: str) -> None:
    """Try the failure e-mail of a notify_failed operation again (enqueues its completion
    job; the operation is deleted once the e-mail is delivered)."""
    with state.api() as api:
        full_id = api.operations.resolve(operation_id)
        record = api.operations.get(full_id)
        if record.status != "notify_failed":
            raise click.ClickException(
                f"operation {full_id} is {record.status}; only a notify_failed one is resent"
            )
        result = api.enqueue(COMPLETION, [full_id], queue=queue)
    click.echo(f"completion job {result.jid} enqueued on {queue} for operation {full_id}")


@ops_group.command("dismiss")
@click.argument("operation_id")
@pass_state
def ops_dismiss(state: CliState, /, operation_id: str) -> None:
    """Delete a notify_failed operation without its e-mail (its totals are kept 72 h)."""
    with state.api() as api:
        full_id = api.operations.resolve(operation_id)
        api.operations.dismiss(full_id)
    click.echo(f"operation {full_id} dismissed")
